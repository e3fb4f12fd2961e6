#!/usr/bin/env python3
"""Build (and cache) the small Linux guest used by gagent's real-guest e2e tests.

The guest is made from Debian packages only, fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x`` into temporary directories (nothing is ever
installed on, or unpacked into, the host's own filesystem):

* kernel: the ``linux-image-*`` package that ``linux-image-amd64`` depends on,
  booted directly (``-kernel``), no boot loader, no disk partitions.  The
  bzImage's payload is unpacked at build time into the plain ELF ``vmlinux``
  which QEMU boots through its PVH entry point: under TCG this skips the
  kernel's own xz self-decompression (about 4 s); a kernel without a PVH
  note falls back to the bzImage (``vmlinuz``);
* initramfs (``cpio`` newc, written by ``cpio.py``): ``busybox-static``,
  ``qemu-guest-agent``, ``python3.11-minimal``, ``libpython3.11-minimal``,
  ``libpython3.11-stdlib`` and ``python3-serial``; the shared libraries these
  need (found with ``ldd``, copied from the host, which runs the same Debian
  release); the handful of kernel modules for virtio-pci, virtio-console,
  virtio-blk and ext4, in dependency order; ``/init`` (``init.sh`` beside this
  file) and ``/etc/gagent/sysvinit/gagent-qga`` (the project's own
  ``packaging/sysvinit/gagent-qga``);
* a ~32 MiB ext4 image, the *data disk template*: callers COPY it for each run
  and attach the copy as the first virtio disk; the guest mounts it at
  ``/data`` (qemu-ga's fsfreeze skips rootfs/tmpfs, so the tests need a real
  block-device file system to list and freeze).

Python code for the guest: ``extra_python_trees`` maps a *name* (a relative
POSIX path) to a host directory.  The directory's files are copied to
``/opt/gagent/<name>`` (``__pycache__``, ``*.pyc`` and dot-files are left out)
and ``/opt/gagent`` is on the guest's ``sys.path`` both through ``PYTHONPATH``
(inherited by everything qemu-ga runs, e.g. ``guest-exec``) and through a
``.pth`` file (so it still works when a ``guest-exec`` passes its own ``env``).
Trees are laid down shallowest name first, so a nested name overlays its
parent.  The repository's layout (``gagent.guest`` lives in ``guest/``) maps
as ``repo_python_trees()`` returns::

    {"gagent": <repo>/gagent, "gagent/guest": <repo>/guest}

which makes ``python3 -m gagent.guest ...`` work in the guest.

Caching: an entry is keyed by a sha256 over the builder's source (this file
and the modules it imports: ``MODULE_SOURCES``), ``init.sh``, the sysvinit
script, the resolved Debian packages (name, version, .deb file name and
sha256 from ``apt-get download --print-uris``), the host's ``mke2fs``
version and the contents of ``extra_python_trees``; the host libraries copied
in are hashed too and checked on every cache hit.  The part that does not
depend on the Python trees (kernel, base initramfs, data disk) is a cache
entry of its own, so a change to the project's Python code only writes a
small second cpio archive and concatenates it (the kernel unpacks
concatenated initramfs archives in order).  Every entry is built in a
temporary directory and renamed into place, so a crashed build never leaves
a half entry; a lock file serialises concurrent builders.

Cache directory: ``--cache-dir``/``cache_dir``, else
``$GAGENT_CACHE_DIR/guest-image``, else ``<repo>/.cache/guest-image``.
Layout: ``debs/`` (downloaded packages), ``base-<key>/`` and ``image-<key>/``
(``vmlinux`` or ``vmlinuz``, ``initrd.img``, ``data.ext4``, ``manifest.json``), and
``apt-resolution.json`` (the package resolution, reused while apt's lists are
unchanged).  Only the few newest entries are kept.

Modules (beside this file, always imported as ``harness.image.NAME``):
``base.py`` the base image's recipe and build; ``debs.py`` apt resolution,
download and ``dpkg-deb -x``; ``kernel.py`` module load order and the PVH
``vmlinux``; ``rootfs.py`` the root tree's layout (merged ``/usr``, host
libraries); ``cpio.py`` the initramfs writer; ``cache.py`` the cache entries'
plumbing; ``common.py`` the error, logging and subprocesses.  This module
keeps the interface (``build_image``, ``GuestImage``, ``repo_python_trees``),
the Python trees, the cache keys and the CLI; whatever lived here before the
split is still reachable as ``build.NAME``.

CLI::

    python tests/harness/image/build.py [--cache-dir DIR] [--force] [--bare]
                                        [--tree NAME=DIR ...]

By default the CLI builds the image with ``repo_python_trees()`` (the one the
e2e tests use); ``--bare`` builds it without any tree.  The cmdline in the
returned ``GuestImage`` is a base: append ``gagent.hostname=NAME``,
``gagent.ports=a,b`` (and ``gagent.shell=1`` for a debug shell on ttyS0).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

if not __package__:  # run as a script, or imported as a top-level "build" (boot.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for harness.image

# Every name that moved out when this module was split stays reachable as build.NAME.
from harness.image.base import (  # noqa: F401
    COMPRESS_INITRD,
    DATA_DISK_LABEL,
    DATA_DISK_MIB,
    FREEZE_FILES,
    INIT_SCRIPT,
    KERNEL_META_PACKAGE,
    KERNEL_MODULES,
    PRECOMPILE_STDLIB,
    PRUNE,
    PYTHON_TREE_ROOT,
    PYTHON_VERSION,
    SHUTDOWN_SHIM,
    SYSVINIT_SCRIPT,
    USERLAND_PACKAGES,
    _build_base,
    _os_release,
    _static_files,
    resolve_packages,
)
from harness.image.cache import (
    _host_files_ok,
    _link_or_copy,
    _locked,
    _publish,
    _read_manifest,
    hash_sources,
    prune_entries,
)
from harness.image.common import HERE, REPO, BuildError, _log, _run, _sha256_file  # noqa: F401
from harness.image.cpio import Cpio
from harness.image.debs import (  # noqa: F401
    _APT,
    Package,
    _apt_fingerprint,
    _dpkg_extract,
    _kernel_package_name,
    _print_uris,
    fetch_packages,
)
from harness.image.kernel import (  # noqa: F401
    _elf_has_pvh_note,
    _modinfo,
    _modname,
    _read_module,
    module_groups,
    pvh_vmlinux,
    select_modules,
)
from harness.image.rootfs import MERGED_USR, _canonical, _ldd, _place, _usrmerge  # noqa: F401

# The builder's source: this module and every module it imports.  It is part of
# the base image's key, and of the systemd guest's (systemd_image.py).
MODULE_SOURCES = tuple(
    HERE / f"{name}.py"
    for name in ("base", "build", "cache", "common", "cpio", "debs", "kernel", "rootfs")
)

# panic=-1: a kernel panic reboots at once, which -no-reboot turns into exit.
# cryptomgr.notests: the crypto self-tests cost about 1 s of boot under TCG.
# lpj: skips the delay-loop calibration of each CPU (slow and noisy under TCG).
CMDLINE = "console=ttyS0 quiet panic=-1 cryptomgr.notests lpj=10000000"
KEEP_ENTRIES = 3


@dataclasses.dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    data_disk_template: Path
    cmdline: str
    build_seconds: float  # time spent in this build_image() call
    cached: bool


def default_cache_dir() -> Path:
    env = os.environ.get("GAGENT_CACHE_DIR")
    if env:
        return Path(env) / "guest-image"
    return REPO / ".cache" / "guest-image"


def repo_python_trees() -> dict[str, Path]:
    """The repository's Python packages, laid out as they install."""
    return {"gagent": REPO / "gagent", "gagent/guest": REPO / "guest"}


# --------------------------------------------------------------------------
# Python trees


def _tree_files(name: str, src: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, host path) of the files of one extra tree, sorted."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith(".") or fn.endswith((".pyc", ".pyo")):
                continue
            p = Path(dirpath, fn)
            if p.is_file():
                yield Path(dirpath, fn).relative_to(src).as_posix(), p


def _check_tree_names(trees: Mapping[str, Path]) -> list[tuple[str, Path]]:
    out = []
    for name, src in trees.items():
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise BuildError(f"extra_python_trees name {name!r} must be a plain relative path")
        if not Path(src).is_dir():
            raise BuildError(f"extra_python_trees[{name!r}] = {src} is not a directory")
        out.append((name, Path(src)))
    return sorted(out, key=lambda item: (item[0].count("/"), item[0]))


def _hash_trees(trees: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for name, src in trees:
        h.update(f"tree\0{name}\n".encode())
        for rel, path in _tree_files(name, src):
            st = path.stat()
            h.update(f"file\0{rel}\0{st.st_mode & 0o111:o}\0{st.st_size}\n".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _write_trees_cpio(trees: list[tuple[str, Path]], out) -> None:
    cpio = Cpio(out)
    now = int(time.time())
    for name, src in trees:
        dest = f"{PYTHON_TREE_ROOT.strip('/')}/{name}"
        cpio.add_parents(dest + "/x", now)
        if dest not in cpio.seen:
            cpio.add(dest, stat.S_IFDIR | 0o755, mtime=now)
        for rel, path in _tree_files(name, src):
            target = f"{dest}/{rel}"
            cpio.add_parents(target, now)
            st = path.stat()
            mode = stat.S_IFREG | (0o755 if st.st_mode & 0o111 else 0o644)
            cpio.add(target, mode, path.read_bytes(), int(st.st_mtime))
    cpio.close()


# --------------------------------------------------------------------------
# Cache keys and entries


def _host_tool_versions() -> dict[str, str]:
    proc = subprocess.run(["mke2fs", "-V"], text=True, capture_output=True, check=False)
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"mke2fs": lines[0] if lines else ""}


def _base_key(kernel: str, pkgs: list[Package]) -> str:
    h = hashlib.sha256()
    freeze_files = [path for path, _ in FREEZE_FILES.values()]
    hash_sources(h, (*MODULE_SOURCES, INIT_SCRIPT, SYSVINIT_SCRIPT, *freeze_files))
    h.update(f"kernel\0{kernel}\n".encode())
    for p in sorted(pkgs, key=lambda p: p.name):
        h.update(f"deb\0{p.name}\0{p.version}\0{p.filename}\0{p.sha256}\n".encode())
    h.update(json.dumps(_host_tool_versions(), sort_keys=True).encode())
    h.update(_os_release().encode())
    return h.hexdigest()


def _prune(cache_dir: Path, keep: set[Path]) -> None:
    for prefix in ("base-", "image-"):
        prune_entries(cache_dir, prefix, KEEP_ENTRIES, keep)
    for junk in cache_dir.glob(".tmp-*"):
        # left by a crashed build (we hold the lock, so no build is running)
        shutil.rmtree(junk, ignore_errors=True)
    for junk in [*cache_dir.glob(".stale-*"), *cache_dir.glob("debs/.download-*")]:
        shutil.rmtree(junk, ignore_errors=True)


def _ensure_base(cache_dir: Path, force: bool) -> tuple[Path, dict, bool]:
    kernel, pkgs = resolve_packages(cache_dir)
    key = _base_key(kernel, pkgs)
    entry = cache_dir / f"base-{key[:24]}"
    manifest = _read_manifest(entry)
    if not force and manifest and manifest.get("key") == key and _host_files_ok(manifest):
        os.utime(entry)
        return entry, manifest, True
    if manifest and not force:
        _log("host libraries changed since the cached base was built: rebuilding it")
    t0 = time.monotonic()
    _log(f"building base image ({kernel}, key {key[:12]})")
    debs = fetch_packages(cache_dir, pkgs)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-base-", dir=cache_dir))
    try:
        out = tmp / "out"
        out.mkdir()
        info = _build_base(tmp / "work", out, kernel, debs, key)
        manifest = {
            "key": key,
            "packages": [dataclasses.asdict(p) for p in pkgs],
            "build_seconds": round(time.monotonic() - t0, 2),
            **info,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(tmp / "work")
        _publish(out, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"base image built in {manifest['build_seconds']:.1f} s: stages {manifest['stages']}")
    return entry, manifest, False


def build_image(
    cache_dir: Path | None = None,
    extra_python_trees: Mapping[str, Path] = {},  # read-only, never mutated
    *,
    force: bool = False,
) -> GuestImage:
    """Return the cached guest image for these inputs, building it if needed."""
    t0 = time.monotonic()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    trees = _check_tree_names(extra_python_trees)
    with _locked(cache_dir):
        base, base_manifest, base_cached = _ensure_base(cache_dir, force)
        if not trees:
            entry, cached = base, base_cached
        else:
            h = hashlib.sha256()
            h.update(json.dumps(base_manifest, sort_keys=True).encode())
            h.update(_hash_trees(trees).encode())
            key = h.hexdigest()
            entry = cache_dir / f"image-{key[:24]}"
            manifest = _read_manifest(entry)
            cached = bool(manifest and manifest.get("key") == key and not force)
            if cached:
                os.utime(entry)
            else:
                tmp = Path(tempfile.mkdtemp(prefix=".tmp-image-", dir=cache_dir))
                tmp.chmod(0o755)
                try:
                    shutil.copyfile(base / "initrd.img", tmp / "initrd.img")
                    with open(tmp / "initrd.img", "ab") as out:
                        if COMPRESS_INITRD:
                            with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
                                _write_trees_cpio(trees, gz)
                        else:
                            _write_trees_cpio(trees, out)
                    kfile = base_manifest["kernel_file"]
                    _link_or_copy(base / kfile, tmp / kfile)
                    _link_or_copy(base / "data.ext4", tmp / "data.ext4")
                    manifest = {
                        "key": key,
                        "base": base.name,
                        "trees": {name: str(src) for name, src in trees},
                    }
                    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
                    _publish(tmp, entry)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        _prune(cache_dir, {base, entry})
    seconds = time.monotonic() - t0
    if cached:
        _log(f"cached: {entry} ({seconds:.2f} s)")
    else:
        _log(f"built {entry} in {seconds:.1f} s")
    return GuestImage(
        kernel=entry / base_manifest["kernel_file"],
        initrd=entry / "initrd.img",
        data_disk_template=entry / "data.ext4",
        cmdline=CMDLINE,
        build_seconds=seconds,
        cached=cached,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: %(default)s")
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    ap.add_argument("--bare", action="store_true", help="no Python trees from the repository")
    ap.add_argument(
        "--tree", action="append", default=[], metavar="NAME=DIR",
        help="extra Python tree (replaces the repository's trees; repeatable)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    trees: dict[str, Path] = {}
    if args.tree:
        for item in args.tree:
            name, sep, src = item.partition("=")
            if not sep:
                ap.error(f"--tree wants NAME=DIR, got {item!r}")
            trees[name] = Path(src)
    elif not args.bare:
        trees = repo_python_trees()
    try:
        image = build_image(args.cache_dir, trees, force=args.force)
    except BuildError as exc:
        print(f"guest-image: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(image), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

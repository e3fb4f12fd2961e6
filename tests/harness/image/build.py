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
* initramfs (``cpio`` newc, written by this module): ``busybox-static``,
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

Caching: an entry is keyed by a sha256 over this file, ``init.sh``, the
sysvinit script, the resolved Debian packages (name, version, .deb file name
and sha256 from ``apt-get download --print-uris``), the host's ``mke2fs``
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
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
INIT_SCRIPT = HERE / "init.sh"
SYSVINIT_SCRIPT = REPO / "packaging" / "sysvinit" / "gagent-qga"

KERNEL_META_PACKAGE = "linux-image-amd64"
USERLAND_PACKAGES = (
    "busybox-static",
    "qemu-guest-agent",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3-serial",
)
# Modules init loads (their dependencies are added, built-in ones dropped).
# crc32c_generic: ext4/jbd2 ask the crypto API for "crc32c" at mount time, and
# without modprobe in the guest nobody would load it on demand.
KERNEL_MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "crc32c_generic", "ext4")
DATA_DISK_MIB = 32
DATA_DISK_LABEL = "gagent-data"
# panic=-1: a kernel panic reboots at once, which -no-reboot turns into exit.
# cryptomgr.notests: the crypto self-tests cost about 1 s of boot under TCG.
# lpj: skips the delay-loop calibration of each CPU (slow and noisy under TCG).
CMDLINE = "console=ttyS0 quiet panic=-1 cryptomgr.notests lpj=10000000"
# Uncompressed cpio: under TCG the kernel unpacked the 55 MB archive in 0.6 s,
# but needed 2.2 s for the same archive gzipped (20 MB); QEMU loading the
# bigger file costs next to nothing.
COMPRESS_INITRD = False
# Precompile the Debian stdlib (Debian ships no .pyc; its postinst builds
# them) so the first python3 in the guest does not compile under TCG.
PRECOMPILE_STDLIB = True
KEEP_ENTRIES = 3
PYTHON_TREE_ROOT = "/opt/gagent"
PYTHON_VERSION = "3.11"

PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/applications",
    "usr/share/pixmaps",
    "etc/init.d",
    "lib/systemd",
    "usr/lib/systemd",
    "lib/udev",
    "usr/lib/udev",
)
MERGED_USR = ("bin", "sbin", "lib", "lib64")


class BuildError(RuntimeError):
    """The guest image could not be built."""


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


def _log(msg: str) -> None:
    print(f"guest-image: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.run(cmd, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise BuildError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout or ''}{proc.stderr or ''}"
        )
    return proc


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Debian packages


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    version: str
    filename: str
    size: int
    sha256: str


_APT = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def _apt_fingerprint() -> str:
    """Changes whenever apt's idea of the candidate versions may change."""
    h = hashlib.sha256()
    roots = [Path("/var/lib/apt/lists"), Path("/etc/apt")]
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "partial")
            for fn in sorted(filenames):
                if fn == "lock":
                    continue
                p = Path(dirpath, fn)
                try:
                    st = p.stat()
                except OSError:
                    continue
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _kernel_package_name() -> str:
    out = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META_PACKAGE]).stdout
    for line in out.splitlines():
        if line.startswith("Depends:"):
            for dep in line.split(":", 1)[1].split(","):
                name = dep.strip().split()[0] if dep.strip() else ""
                if name.startswith("linux-image-"):
                    return name
    raise BuildError(f"cannot find the kernel package {KERNEL_META_PACKAGE} depends on")


def _print_uris(names: list[str]) -> list[Package]:
    with tempfile.TemporaryDirectory(prefix="gagent-apt-") as empty:
        # --print-uris prints nothing for a .deb already in the cwd: use an empty one.
        out = _run(["apt-get", *_APT, "download", "--print-uris", *names], cwd=empty).stdout
    pkgs = []
    for line in out.splitlines():
        m = re.match(r"^'[^']+' (\S+\.deb) (\d+) SHA256:([0-9a-f]{64})$", line.strip())
        if not m:
            continue
        filename, size, sha = m.group(1), int(m.group(2)), m.group(3)
        name, version = filename.split("_")[:2]
        pkgs.append(Package(name, urllib.parse.unquote(version), filename, size, sha))
    got = {p.name for p in pkgs}
    missing = [n for n in names if n not in got]
    if missing:
        raise BuildError(f"apt-get download --print-uris gave no .deb for {missing}")
    return pkgs


def resolve_packages(cache_dir: Path) -> tuple[str, list[Package]]:
    """Return (kernel package name, all packages), memoised per apt state."""
    memo = cache_dir / "apt-resolution.json"
    fingerprint = _apt_fingerprint()
    names_key = [KERNEL_META_PACKAGE, *USERLAND_PACKAGES]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(memo.read_text())
        if data["fingerprint"] == fingerprint and data["names"] == names_key:
            return data["kernel"], [Package(**p) for p in data["packages"]]

    def attempt() -> tuple[str, list[Package]]:
        kernel = _kernel_package_name()
        return kernel, _print_uris([kernel, *USERLAND_PACKAGES])

    try:
        kernel, pkgs = attempt()
    except BuildError as first:
        if os.geteuid() != 0:
            raise BuildError(f"{first}\n(run 'apt-get update' as root and retry)") from None
        _log("package lookup failed; running apt-get update once")
        _run(["apt-get", "update", "-qq"])
        fingerprint = _apt_fingerprint()
        kernel, pkgs = attempt()
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
    tmp.write_text(
        json.dumps(
            {
                "fingerprint": fingerprint,
                "names": names_key,
                "kernel": kernel,
                "packages": [dataclasses.asdict(p) for p in pkgs],
            },
            indent=1,
        )
    )
    os.replace(tmp, memo)
    return kernel, pkgs


def fetch_packages(cache_dir: Path, pkgs: list[Package]) -> dict[str, Path]:
    """Download the .debs into <cache>/debs (reused while their sha256 matches)."""
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path] = {}
    wanted = []
    for p in pkgs:
        path = debs / p.filename
        if path.exists() and path.stat().st_size == p.size and _sha256_file(path) == p.sha256:
            result[p.name] = path
        else:
            wanted.append(p)
    if wanted:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=debs) as tmp:
            os.chmod(tmp, 0o755)
            _run(
                ["apt-get", *_APT, "-q", "download", *(f"{p.name}={p.version}" for p in wanted)],
                cwd=tmp,
            )
            for p in wanted:
                src = Path(tmp, p.filename)
                if not src.exists() or _sha256_file(src) != p.sha256:
                    raise BuildError(f"download of {p.filename} failed or has a wrong sha256")
                os.replace(src, debs / p.filename)
                result[p.name] = debs / p.filename
    keep = {p.filename for p in pkgs}
    for old in debs.glob("*.deb"):
        if old.name not in keep:
            with contextlib.suppress(OSError):
                old.unlink()
    return result


def _dpkg_extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)])


# --------------------------------------------------------------------------
# Kernel modules


def _modinfo(data: bytes) -> dict[str, list[str]]:
    """The .modinfo section of an ELF64 kernel module, as key -> values."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise BuildError("not an ELF64 kernel module")
    end = "<" if data[5] == 1 else ">"
    shoff = struct.unpack_from(end + "Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            end + "IIQQQQ", data, shoff + i * shentsize
        )
        return name, off, size

    _, stroff, _ = section(shstrndx)
    info: dict[str, list[str]] = {}
    for i in range(shnum):
        name, off, size = section(i)
        sname = data[stroff + name : data.index(b"\0", stroff + name)]
        if sname != b".modinfo":
            continue
        for item in data[off : off + size].split(b"\0"):
            if b"=" in item:
                k, v = item.decode(errors="replace").split("=", 1)
                info.setdefault(k, []).append(v)
    return info


def _read_module(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".ko.zst"):
        if not shutil.which("zstd"):
            raise BuildError(f"{path.name} is zstd-compressed and zstd is not installed")
        return subprocess.run(
            ["zstd", "-dcq", str(path)], check=True, stdout=subprocess.PIPE
        ).stdout
    return raw


def _modname(filename: str) -> str:
    base = filename.split(".ko")[0]
    return base.replace("-", "_")


def module_groups(modules: list[tuple[str, bytes]]) -> list[int]:
    """Group number of each module: modules that depend on each other share one.

    init loads the groups in parallel (each in dependency order); with 2 vCPUs
    under TCG that takes the ext4 stack off the virtio stack's critical path.
    """
    names = [_modname(Path(rel).name) for rel, _ in modules]
    parent = list(range(len(modules)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (_rel, data) in enumerate(modules):
        for deps in _modinfo(data).get("depends", []):
            for dep in filter(None, deps.split(",")):
                dep = dep.replace("-", "_")
                if dep in names:
                    parent[find(i)] = find(names.index(dep))
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(modules))]


def select_modules(
    moddir: Path, roots: tuple[str, ...]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Modules to load, dependencies first: [(path relative to moddir, ELF bytes)].

    Also returns the names found built into the kernel (nothing to load).
    The package ships no modules.dep (depmod runs at install time), so the
    order comes from each module's own ``depends=``.
    """
    builtin = set()
    builtin_file = moddir / "modules.builtin"
    if builtin_file.exists():
        builtin = {_modname(Path(line).name) for line in builtin_file.read_text().split()}
    index: dict[str, Path] = {}
    for p in (moddir / "kernel").rglob("*.ko*"):
        index.setdefault(_modname(p.name), p)
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()
    builtins_hit: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in done:
            return
        if name in chain:
            raise BuildError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        done.add(name)
        if name in builtin:
            builtins_hit.append(name)
            return
        path = index.get(name)
        if path is None:
            raise BuildError(f"kernel module {name} is neither a module nor built in")
        data = _read_module(path)
        for deps in _modinfo(data).get("depends", []):
            for dep in filter(None, deps.split(",")):
                visit(dep, (*chain, name))
        rel = path.relative_to(moddir).as_posix()
        rel = re.sub(r"\.ko\.(xz|gz|zst)$", ".ko", rel)
        order.append((rel, data))

    for root in roots:
        visit(root, ())
    return order, builtins_hit


def _elf_has_pvh_note(elf: bytes) -> bool:
    """True if an ELF64 kernel has the Xen PHYS32_ENTRY note QEMU's PVH boot needs."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, off, _vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = off, off + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF vmlinux inside an x86 bzImage, if QEMU can boot it (PVH); else None."""
    if bzimage[0x202:0x206] != b"HdrS":
        return None
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start : start + payload_length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        elif payload.startswith(b"\x28\xb5\x2f\xfd") and shutil.which("zstd"):
            elf = subprocess.run(
                ["zstd", "-dcq"], input=payload, stdout=subprocess.PIPE, check=True
            ).stdout
        else:
            return None
    except (lzma.LZMAError, zlib.error, subprocess.CalledProcessError):
        return None
    return elf if _elf_has_pvh_note(elf) else None


# --------------------------------------------------------------------------
# cpio (newc) writer


class Cpio:
    """Minimal cpio newc writer: files, dirs, symlinks, device nodes; uid/gid 0."""

    def __init__(self, f) -> None:
        self.f = f
        self.ino = 1
        self.seen: set[str] = set()

    def _pad(self, n: int) -> None:
        if n % 4:
            self.f.write(b"\0" * (4 - n % 4))

    def _header(self, name: str, mode: int, size: int, mtime: int, rdev: tuple[int, int]) -> None:
        fields = (
            self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, max(0, mtime), size,
            0, 0, rdev[0], rdev[1], len(name.encode()) + 1, 0,
        )  # fmt: skip
        self.ino += 1
        head = b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"
        self.f.write(head)
        self._pad(len(head))

    def add(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        mtime: int = 0,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        name = name.strip("/") or "."
        self.seen.add(name)
        self._header(name, mode, len(data), mtime, rdev)
        self.f.write(data)
        self._pad(len(data))

    def add_parents(self, name: str, mtime: int = 0) -> None:
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.seen:
                self.add(d, stat.S_IFDIR | 0o755, mtime=mtime)

    def add_file(self, name: str, path: Path, st: os.stat_result) -> None:
        name = name.strip("/")
        self.seen.add(name)
        self._header(name, st.st_mode, st.st_size, int(st.st_mtime), (0, 0))
        with open(path, "rb") as src:
            copied = 0
            while chunk := src.read(1 << 20):
                self.f.write(chunk)
                copied += len(chunk)
        if copied != st.st_size:
            raise BuildError(f"{path} changed while archiving it")
        self._pad(st.st_size)

    def add_tree(self, root: Path, prefix: str = "") -> None:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            base = f"{prefix}/{rel_dir}".strip("/") if rel_dir != "." else prefix.strip("/")
            for entry in sorted(dirnames + filenames):
                path = Path(dirpath, entry)
                st = path.lstat()
                name = f"{base}/{entry}".strip("/")
                if stat.S_ISDIR(st.st_mode):
                    self.add(name, st.st_mode, mtime=int(st.st_mtime))
                elif stat.S_ISLNK(st.st_mode):
                    self.add(name, st.st_mode, os.readlink(path).encode(), int(st.st_mtime))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(name, path, st)

    def close(self) -> None:
        self.add("TRAILER!!!", 0)
        tail = self.f.tell() % 512
        if tail:
            self.f.write(b"\0" * (512 - tail))


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
# The base image (kernel, base initramfs, data disk)


def _canonical(rel: str) -> str:
    """Map a path inside the image onto the merged-/usr layout."""
    rel = rel.lstrip("/")
    first = rel.split("/", 1)[0]
    return f"usr/{rel}" if first in MERGED_USR else rel


def _usrmerge(root: Path) -> None:
    for d in MERGED_USR:
        src = root / d
        dst = root / "usr" / d
        if src.is_symlink():
            continue
        if src.is_dir():
            for dirpath, _dirnames, filenames in os.walk(src):
                rel = Path(dirpath).relative_to(src)
                (dst / rel).mkdir(parents=True, exist_ok=True)
                for fn in filenames:
                    os.replace(Path(dirpath, fn), dst / rel / fn)
            shutil.rmtree(src)
        dst.mkdir(parents=True, exist_ok=True)
        src.symlink_to(f"usr/{d}")


def _place(root: Path, rel: str, data: bytes, mode: int) -> None:
    path = root / _canonical(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(data)
    path.chmod(mode)


def _ldd(binaries: list[Path]) -> tuple[dict[str, set[str]], dict[Path, list[str]]]:
    """Host libraries the binaries need, and each binary's unresolved sonames."""
    needed: dict[str, set[str]] = {}
    missing: dict[Path, list[str]] = {}
    for binary in binaries:
        proc = subprocess.run(["ldd", str(binary)], text=True, capture_output=True, check=False)
        if proc.returncode != 0:
            if "not a dynamic executable" in proc.stdout + proc.stderr:
                continue
            raise BuildError(f"ldd {binary} failed: {proc.stdout}{proc.stderr}")
        for line in proc.stdout.splitlines():
            line = line.strip()
            if "=> not found" in line:
                missing.setdefault(binary, []).append(line.split()[0])
            elif "=>" in line:
                path = line.split("=>", 1)[1].split("(")[0].strip()
                if path:
                    needed.setdefault(path, set()).add(binary.name)
            elif line.startswith("/"):
                needed.setdefault(line.split()[0], set()).add(binary.name)
    return needed, missing


SHUTDOWN_SHIM = """#!/bin/sh
# shutdown(8) shim of the gagent e2e guest.  qemu-ga's guest-shutdown runs
# "/sbin/shutdown -h -P|-H|-r +0 MESSAGE" and waits for it; hand the request
# to /init (PID 1, which stops the agents, unmounts /data and powers off) and
# return at once, so qemu-ga is free to handle the SIGTERM /init sends it.  A
# detached fallback forces the power state if PID 1 has not done it in 10 s.
action=poweroff
for arg in "$@"; do
    case "$arg" in
        -r) action=reboot ;;
        -H) action=halt ;;
        -P) action=poweroff ;;
    esac
done
case "$action" in
    reboot) sig=TERM ;;
    halt) sig=USR1 ;;
    *) sig=USR2 ;;
esac
( sleep 10; sync; busybox "$action" -f ) </dev/null >/dev/null 2>&1 &
kill -"$sig" 1
"""


def _os_release() -> str:
    version_id, codename = "12", "bookworm"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_ID="):
                version_id = line.split("=", 1)[1].strip('"')
            elif line.startswith("VERSION_CODENAME="):
                codename = line.split("=", 1)[1].strip('"')
    return (
        f'PRETTY_NAME="gagent e2e guest (Debian {version_id} packages)"\n'
        'NAME="gagent-e2e"\n'
        f'VERSION_ID="{version_id}"\n'
        f'VERSION="{version_id} ({codename})"\n'
        f"VERSION_CODENAME={codename}\n"
        "ID=gagent-e2e\n"
        "ID_LIKE=debian\n"
        'VARIANT="end-to-end test guest"\n'
        "VARIANT_ID=e2e\n"
    )


def _static_files() -> dict[str, tuple[bytes, int]]:
    files = {
        "init": (INIT_SCRIPT.read_bytes(), 0o755),
        "etc/gagent/sysvinit/gagent-qga": (SYSVINIT_SCRIPT.read_bytes(), 0o755),
        "sbin/shutdown": (SHUTDOWN_SHIM.encode(), 0o755),
        "etc/os-release": (_os_release().encode(), 0o644),
        "etc/hostname": (b"gagent-e2e\n", 0o644),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": (b"root:x:0:\ntty:x:5:\n", 0o644),
        "etc/shadow": (b"root:*:19000:0:99999:7:::\n", 0o600),
        "etc/hosts": (b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n", 0o644),
        "etc/nsswitch.conf": (b"passwd: files\ngroup: files\nhosts: files\n", 0o644),
        "etc/profile": (
            f"export PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH={PYTHON_TREE_ROOT}\n".encode(),
            0o644,
        ),
        "usr/lib/python3/dist-packages/gagent-e2e.pth": (f"{PYTHON_TREE_ROOT}\n".encode(), 0o644),
    }
    return files


def _host_tool_versions() -> dict[str, str]:
    proc = subprocess.run(["mke2fs", "-V"], text=True, capture_output=True, check=False)
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"mke2fs": lines[0] if lines else ""}


def _base_key(kernel: str, pkgs: list[Package]) -> str:
    h = hashlib.sha256()
    for path in (Path(__file__).resolve(), INIT_SCRIPT, SYSVINIT_SCRIPT):
        h.update(f"source\0{path.name}\n".encode())
        h.update(path.read_bytes())
    h.update(f"kernel\0{kernel}\n".encode())
    for p in sorted(pkgs, key=lambda p: p.name):
        h.update(f"deb\0{p.name}\0{p.version}\0{p.filename}\0{p.sha256}\n".encode())
    h.update(json.dumps(_host_tool_versions(), sort_keys=True).encode())
    h.update(_os_release().encode())
    return h.hexdigest()


def _build_base(work: Path, out: Path, kernel_pkg: str, debs: dict[str, Path], key: str) -> dict:
    t0 = time.monotonic()
    stages: dict[str, float] = {}

    def stage(name: str) -> None:
        nonlocal t0
        now = time.monotonic()
        stages[name] = round(now - t0, 2)
        t0 = now

    kx = work / "kernel"
    root = work / "root"
    _dpkg_extract(debs[kernel_pkg], kx)
    vmlinuz = sorted((kx / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise BuildError(f"{kernel_pkg} has no /boot/vmlinuz-*")
    kver = vmlinuz[0].name.removeprefix("vmlinuz-")
    moddir = kx / "lib" / "modules" / kver
    vmlinux = pvh_vmlinux(vmlinuz[0].read_bytes())
    if vmlinux is not None:
        kernel_file = "vmlinux"
        (out / kernel_file).write_bytes(vmlinux)
    else:
        _log("no PVH-capable vmlinux in the bzImage: booting the bzImage")
        kernel_file = "vmlinuz"
        shutil.copyfile(vmlinuz[0], out / kernel_file)
    modules, builtins_hit = select_modules(moddir, KERNEL_MODULES)
    groups = module_groups(modules)
    stage("kernel")

    for name in USERLAND_PACKAGES:
        _dpkg_extract(debs[name], root)
    for rel in PRUNE:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
    _usrmerge(root)
    for rel, data in modules:
        _place(root, f"lib/modules/{kver}/{rel}", data, 0o644)
    _place(
        root,
        "etc/gagent/modules",
        "".join(f"{g} {r}\n" for g, (r, _) in zip(groups, modules, strict=True)).encode(),
        0o644,
    )
    for d in ("proc", "sys", "dev", "run", "tmp", "data", "root", "var/tmp", "mnt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    if not (root / "var/run").exists():
        (root / "var/run").symlink_to("../run")
    stage("userland")

    # busybox applets (not over files the packages or we provide)
    busybox = root / "usr/bin/busybox"
    applets = _run([str(busybox), "--list-full"]).stdout.split()
    for rel, (data, mode) in _static_files().items():
        _place(root, rel, data, mode)
    for applet in applets:
        dest = root / _canonical(applet)
        if dest.exists() or dest.is_symlink():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(os.path.relpath(busybox, dest.parent))
    py = root / "usr/bin/python3"
    if not py.exists():
        py.symlink_to(f"python{PYTHON_VERSION}")

    # shared libraries from the host, as ldd resolves them
    dynload = root / f"usr/lib/python{PYTHON_VERSION}/lib-dynload"
    elves = [root / "usr/sbin/qemu-ga", root / f"usr/bin/python{PYTHON_VERSION}"]
    extensions = sorted(dynload.glob("*.so"))
    needed, missing = _ldd(elves + extensions)
    hard_missing = {str(b.relative_to(root)): s for b, s in missing.items() if b in elves}
    if hard_missing:
        raise BuildError(
            f"the host lacks libraries the guest needs: {hard_missing} (install the Debian "
            "packages qemu-guest-agent and python3.11 on the host, which pull them in)"
        )
    dropped = []
    for ext, sonames in missing.items():
        dropped.append(f"{ext.name} ({', '.join(sonames)})")
        ext.unlink()
    if dropped:
        _log(f"dropped Python extensions whose libraries the host lacks: {dropped}")
    gcc_s = Path("/lib/x86_64-linux-gnu/libgcc_s.so.1")  # dlopen()ed by pthread_cancel
    if gcc_s.exists():
        needed.setdefault(str(gcc_s), set()).add("glibc")
    host_files: dict[str, str] = {}
    for lib in sorted(needed):
        real = Path(lib).resolve()
        data = real.read_bytes()
        host_files[lib] = hashlib.sha256(data).hexdigest()
        _place(root, lib, data, 0o755)
    if shutil.which("ldconfig"):
        (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
        subprocess.run(["ldconfig", "-r", str(root)], check=False, capture_output=True)
    stage("libraries")

    if PRECOMPILE_STDLIB:
        # The guest's own interpreter (it runs on the host: same Debian) so
        # the .pyc magic matches; unchecked-hash pycs need no mtime match.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run(
            [
                str(root / f"usr/bin/python{PYTHON_VERSION}"), "-I", "-m", "compileall",
                "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                "-s", str(root), "-p", "/", "-x", r"/(test|tests|idlelib|lib2to3)/",
                str(root / f"usr/lib/python{PYTHON_VERSION}"),
                str(root / "usr/lib/python3/dist-packages"),
            ],
            env=env, check=False, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            _log(f"compileall of the guest stdlib failed in part: {proc.stdout[-500:]}")
        stage("compileall")

    initrd_tmp = out / "initrd.cpio"
    with open(initrd_tmp, "wb") as f:
        cpio = Cpio(f)
        cpio.add("dev", stat.S_IFDIR | 0o755)
        cpio.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
        cpio.add("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3))
        cpio.add_tree(root)
        cpio.close()
    initrd_size = initrd_tmp.stat().st_size
    if COMPRESS_INITRD:
        with (
            open(initrd_tmp, "rb") as src,
            gzip.GzipFile(out / "initrd.img", "wb", 6, mtime=0) as gz,
        ):
            shutil.copyfileobj(src, gz, 1 << 20)
        initrd_tmp.unlink()
    else:
        initrd_tmp.rename(out / "initrd.img")
    stage("cpio")

    disk = out / "data.ext4"
    seed = work / "data-seed"
    seed.mkdir()
    (seed / "README").write_text("gagent e2e data disk (copy of the cached template)\n")
    with open(disk, "wb") as f:
        f.truncate(DATA_DISK_MIB << 20)
    _run(
        [
            "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0",
            "-L", DATA_DISK_LABEL, "-U", str(uuid.UUID(key[:32])),
            "-E", "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
            "-d", str(seed), str(disk),
        ]
    )  # fmt: skip
    stage("data-disk")

    return {
        "kernel_package": kernel_pkg,
        "kernel_release": kver,
        "kernel_file": kernel_file,
        "modules": [r for r, _ in modules],
        "builtin_modules": builtins_hit,
        "host_files": host_files,
        "dropped_extensions": dropped,
        "initrd_uncompressed_bytes": initrd_size,
        "initrd_gzip": COMPRESS_INITRD,
        "stages": stages,
    }


# --------------------------------------------------------------------------
# Cache plumbing


def _read_manifest(entry: Path) -> dict | None:
    try:
        return json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _host_files_ok(manifest: dict) -> bool:
    for path, digest in manifest.get("host_files", {}).items():
        try:
            if _sha256_file(Path(path).resolve()) != digest:
                return False
        except OSError:
            return False
    return True


def _publish(tmp: Path, entry: Path) -> None:
    """Atomically move a finished temp dir to its entry name (replacing a stale one)."""
    if entry.exists():
        stale = entry.with_name(f".stale-{entry.name}-{os.getpid()}")
        os.replace(entry, stale)
        os.replace(tmp, entry)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(tmp, entry)


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    with open(cache_dir / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prune_entries(cache_dir: Path, prefix: str, count: int, keep: set[Path]) -> None:
    """Remove all but the ``count`` newest ``prefix*`` entries (never one in ``keep``)."""
    entries = sorted(
        (p for p in cache_dir.glob(prefix + "*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[count:]:
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)


def _prune(cache_dir: Path, keep: set[Path]) -> None:
    for prefix in ("base-", "image-"):
        prune_entries(cache_dir, prefix, KEEP_ENTRIES, keep)
    for junk in cache_dir.glob(".tmp-*"):
        # left by a crashed build (we hold the lock, so no build is running)
        shutil.rmtree(junk, ignore_errors=True)
    for junk in [*cache_dir.glob(".stale-*"), *cache_dir.glob("debs/.download-*")]:
        shutil.rmtree(junk, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


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

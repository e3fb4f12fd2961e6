#!/usr/bin/env python3
"""Build (and cache) the systemd guest: stock Debian with gagent's .deb installed.

The busybox guest (``build.py``) exercises the protocol; this one exercises the
*packaging*: a plain Debian userland, built by ``debootstrap --variant=minbase``
with systemd, systemd-sysv, udev, kmod, qemu-guest-agent, python3 and
python3-serial, into which ``dpkg -i`` (in a chroot, as an image build does)
installs the gagent-guest .deb that ``scripts/build-packages.sh`` makes.
Nothing else about the agent is configured: qemu-ga must come up on gagent's
port through the package's udev rule and template unit alone.

Pieces (the guest runs the host's Debian release, from the mirror apt uses):

* kernel: the busybox guest's (same kernel package, PVH ``vmlinux``), from
  ``build.build_image()``;
* stage-1 initramfs: busybox-static, the modules the root disk needs
  (virtio_pci, virtio_blk, ext4 and their dependencies) and
  ``stage1-init.sh``, which mounts ``/dev/vda`` and switch_roots to systemd;
* root disk: an ext4 image (``mke2fs -d``) of the debootstrapped tree plus a
  few kernel modules (depmod'ed, so udev and kmod load virtio_console by
  themselves) and the installed .deb.  Units that only cost boot time under
  TCG (gettys, timers, binfmt, pstore) are masked; nothing about qemu-ga is.

Two cache entries, each built in a temp dir and renamed into place under the
same lock as build.py's: ``sysroot-<key>/rootfs.tar`` (debootstrap, about a
minute; keyed on the release, the mirror's InRelease as apt last fetched it,
the package list and debootstrap's version) and ``sysimage-<key>/`` (kernel,
``initrd.img``, ``root.ext4``, ``manifest.json``; keyed on the sysroot, the
.deb's sha256, the kernel, ``stage1-init.sh`` and the source of this file and
of every builder module it runs: ``build.MODULE_SOURCES``).  ``root.ext4`` is
never written by a guest: boot a qcow2 overlay on it (``root_overlay()``).

CLI::

    python tests/harness/image/systemd_image.py --deb dist/gagent-guest_*.deb
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for harness.image

from harness.image import build, cache
from harness.image.common import BuildError, _log, _run, _sha256_file
from harness.image.cpio import Cpio
from harness.image.debs import Package, _dpkg_extract, fetch_packages
from harness.image.kernel import select_modules
from harness.image.rootfs import _place

HERE = Path(__file__).resolve().parent
STAGE1_INIT = HERE / "stage1-init.sh"

GUEST_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "qemu-guest-agent",
    "python3",
    "python3-serial",
)
# Stage 1 loads only what mounting the root disk needs; the root disk also gets
# virtio_console, which udev loads by itself once the port device shows up.
STAGE1_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
ROOT_MODULES = (*STAGE1_MODULES, "virtio_console")
# Boot-time cost under TCG with nothing to do in a test guest (about 15 s to the
# agent without these masks, measured; none of them touches udev or qemu-ga).
MASKED_UNITS = (
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "getty-static.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-pstore.service",
    "systemd-random-seed.service",
    "systemd-journal-flush.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-remount-fs.service",  # stage 1 mounts the root read-write already
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "modprobe@configfs.service",
    "modprobe@dm_mod.service",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
)
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
ROOT_LABEL = "gagent-sdroot"
ROOT_SLACK_MIB = 96
CMDLINE = "console=ttyS0 quiet panic=-1 cryptomgr.notests lpj=10000000 systemd.show_status=0"
SYSROOT_RECIPE = 1  # bump when the debootstrap step itself changes


@dataclasses.dataclass(frozen=True)
class SystemdImage:
    kernel: Path
    initrd: Path
    root_disk: Path  # read-only template: boot an overlay (root_overlay())
    cmdline: str
    kernel_release: str
    deb: str  # the .deb file name installed in it
    build_seconds: float
    cached: bool

    @property
    def data_disk_template(self) -> Path:  # what boot.py's helpers call the first disk
        return self.root_disk


def root_overlay(image: SystemdImage, path: Path) -> Path:
    """A qcow2 overlay of the image's root disk at ``path`` (what a guest may write)."""
    path.unlink(missing_ok=True)
    _run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
         "-b", str(image.root_disk.resolve()), str(path)]
    )  # fmt: skip
    return path


# --------------------------------------------------------------------------
# The debootstrapped tree


def _host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise BuildError("cannot tell the host's Debian release (no VERSION_CODENAME in os-release)")


def _apt_mirror(codename: str) -> str | None:
    out = _run(
        ["apt-get", "indextargets", "--format",
         "$(REPO_URI) $(CODENAME) $(COMPONENT) $(IDENTIFIER)"]
    ).stdout  # fmt: skip
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1:] == [codename, "main", "Packages"]:
            return parts[0]
    return None


def _mirror_for(codename: str) -> tuple[str, str]:
    """(mirror URI, sha256 of its InRelease as apt holds it) for ``codename`` main."""
    uri = _apt_mirror(codename)
    if uri is None and os.geteuid() == 0:
        _log("apt has no package lists (yet): running apt-get update once")
        _run(["apt-get", "update", "-qq"])
        uri = _apt_mirror(codename)
    if uri is None:
        raise BuildError(
            f"apt knows no mirror for '{codename} main' (run 'apt-get update', and check "
            "/etc/apt/sources.list*)"
        )
    lists = Path("/var/lib/apt/lists")
    stem = uri.split("://", 1)[-1].rstrip("/").replace("/", "_")
    release = lists / f"{stem}_dists_{codename}_InRelease"
    return uri, _sha256_file(release) if release.exists() else "unknown"


def _sysroot_key(codename: str, mirror: str, release_sha: str) -> str:
    version = _run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"]).stdout
    h = hashlib.sha256()
    h.update(json.dumps([SYSROOT_RECIPE, codename, mirror, release_sha, version,
                         GUEST_PACKAGES, PRUNE]).encode())  # fmt: skip
    return h.hexdigest()


def _debootstrap(cache_dir: Path, codename: str, mirror: str, out_tar: Path) -> dict:
    if not shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        raise BuildError("debootstrap is missing (apt-get install debootstrap)")
    debs = cache_dir / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-debootstrap-", dir=cache_dir) as tmp:
        root = Path(tmp, "root")
        t0 = time.monotonic()
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(GUEST_PACKAGES)}",
             f"--cache-dir={debs}", codename, str(root), mirror],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
        )  # fmt: skip
        if proc.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else proc.stderr
            raise BuildError(f"debootstrap failed ({proc.returncode}):\n{detail}")
        seconds = time.monotonic() - t0
        for rel in PRUNE:
            shutil.rmtree(root / rel, ignore_errors=True)
        for pattern in ("var/cache/apt/*.bin", "var/lib/apt/lists/*_*", "var/log/*.log"):
            for p in root.glob(pattern):
                p.unlink()
        _run(["tar", "--numeric-owner", "--xattrs", "-cf", str(out_tar), "-C", str(root), "."])
    return {"debootstrap_seconds": round(seconds, 1)}


def _ensure_sysroot(cache_dir: Path, force: bool) -> tuple[Path, dict]:
    codename = _host_codename()
    mirror, release_sha = _mirror_for(codename)
    key = _sysroot_key(codename, mirror, release_sha)
    entry = cache_dir / f"sysroot-{key[:24]}"
    manifest = cache._read_manifest(entry)
    if not force and manifest and manifest.get("key") == key:
        os.utime(entry)
        return entry, manifest
    _log(f"debootstrapping {codename} with {', '.join(GUEST_PACKAGES)} (about a minute)")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-sysroot-", dir=cache_dir))
    try:
        info = _debootstrap(cache_dir, codename, mirror, tmp / "rootfs.tar")
        manifest = {"key": key, "codename": codename, "packages": GUEST_PACKAGES, **info}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        cache._publish(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry, manifest


# --------------------------------------------------------------------------
# The image


def _chroot(root: Path, *argv: str) -> str:
    # No /proc, /sys or /dev mounted: the package's scripts must see a chroot
    # (their guard) and could never reach the build machine's devices.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}  # fmt: skip
    return _run(["chroot", str(root), *argv], env=env, stdin=subprocess.DEVNULL).stdout


def _install_deb(root: Path, deb: Path) -> str:
    inside = root / "tmp" / deb.name
    shutil.copyfile(deb, inside)
    try:
        t0 = time.monotonic()
        _chroot(root, "dpkg", "-i", f"/tmp/{deb.name}")
        seconds = time.monotonic() - t0
    finally:
        inside.unlink()
    status = _chroot(root, "dpkg-query", "-W", "-f=${Status} ${Version}", "gagent-guest")
    if not status.startswith("install ok installed"):
        raise BuildError(f"dpkg -i {deb.name} left gagent-guest as '{status}'")
    return f"{status} ({seconds:.1f} s)"


def _place_modules(root: Path, moddir: Path, kver: str) -> list[str]:
    modules, _builtin = select_modules(moddir, ROOT_MODULES)
    dest = root / "usr/lib/modules" / kver
    for rel, data in modules:
        _place(root, f"usr/lib/modules/{kver}/{rel}", data, 0o644)
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (moddir / meta).exists():
            shutil.copyfile(moddir / meta, dest / meta)
    _chroot(root, "depmod", kver)  # the guest's own kmod
    return [rel for rel, _ in modules]


def _configure(root: Path) -> None:
    systemd_dir = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        for wants in systemd_dir.glob(f"*.wants/{unit}"):
            wants.unlink()
        link = systemd_dir / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (root / "etc/fstab").write_text(f"LABEL={ROOT_LABEL} / ext4 rw,noatime 0 0\n")
    (root / "etc/hostname").write_text("gagent-systemd\n")
    (root / "etc/gagent-e2e-image").write_text("gagent systemd e2e guest\n")


def _stage1_initrd(out: Path, moddir: Path, busybox_deb: Path, work: Path) -> list[str]:
    modules, _builtin = select_modules(moddir, STAGE1_MODULES)
    bbx = work / "busybox"
    _dpkg_extract(busybox_deb, bbx)
    busybox = next(p for p in (bbx / "bin/busybox", bbx / "usr/bin/busybox") if p.exists())
    with open(out, "wb") as f:
        cpio = Cpio(f)
        for d in ("dev", "bin", "lib", "lib/modules", "proc", "newroot"):
            cpio.add(d, stat.S_IFDIR | 0o755)
        cpio.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
        cpio.add("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes())
        cpio.add("init", stat.S_IFREG | 0o755, STAGE1_INIT.read_bytes())
        listing = []
        for rel, data in modules:
            name = rel.replace("/", "_")
            cpio.add(f"lib/modules/{name}", stat.S_IFREG | 0o644, data)
            listing.append(name)
        cpio.add("modules", stat.S_IFREG | 0o644, "".join(f"{m}\n" for m in listing).encode())
        cpio.close()
    return [rel for rel, _ in modules]


def _mkfs(root: Path, disk: Path) -> int:
    used = int(_run(["du", "-sxk", str(root)]).stdout.split()[0]) * 1024
    size = (used * 5 // 4 + (ROOT_SLACK_MIB << 20)) // (1 << 20) << 20
    with open(disk, "wb") as f:
        f.truncate(size)
    _run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", ROOT_LABEL,
         "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", str(root), str(disk)]
    )  # fmt: skip
    return size


def build_systemd_image(
    deb: Path, cache_dir: Path | None = None, *, force: bool = False
) -> SystemdImage:
    """Return the cached systemd guest with ``deb`` installed, building it if needed."""
    t0 = time.monotonic()
    deb = Path(deb)
    if not deb.is_file():
        raise BuildError(f"no such .deb: {deb} (build it with scripts/build-packages.sh deb)")
    cache_dir = Path(cache_dir) if cache_dir is not None else build.default_cache_dir()
    base = build.build_image(cache_dir)  # the kernel, and the package cache we share
    kernel_pkg, pkgs = build.resolve_packages(cache_dir)
    with cache._locked(cache_dir):
        base_manifest = cache._read_manifest(base.kernel.parent) or {}
        kver = base_manifest["kernel_release"]
        sysroot, sysroot_manifest = _ensure_sysroot(cache_dir, force)
        h = hashlib.sha256()
        for part in (sysroot_manifest["key"], _sha256_file(deb), kver, base.kernel.name):
            h.update(f"{part}\n".encode())
        for pkg in pkgs:  # the kernel's modules and stage 1's busybox come from these
            if pkg.name in (kernel_pkg, "busybox-static"):
                h.update(f"{pkg.name}\0{pkg.sha256}\n".encode())
        # this file and every module of the builder it runs (build.py's MODULE_SOURCES)
        cache.hash_sources(h, (*build.MODULE_SOURCES, Path(__file__).resolve(), STAGE1_INIT))
        key = h.hexdigest()
        entry = cache_dir / f"sysimage-{key[:24]}"
        manifest = cache._read_manifest(entry)
        cached = bool(not force and manifest and manifest.get("key") == key)
        if cached:
            os.utime(entry)
        else:
            manifest = _build_entry(cache_dir, entry, key, sysroot, deb, base.kernel, kver,
                                    kernel_pkg, pkgs)  # fmt: skip
        cache.prune_entries(cache_dir, "sysroot-", 1, {sysroot})
        cache.prune_entries(cache_dir, "sysimage-", 2, {entry})
    seconds = time.monotonic() - t0
    _log(f"systemd guest {'cached' if cached else 'built'}: {entry} ({seconds:.1f} s)")
    return SystemdImage(
        kernel=entry / base.kernel.name,
        initrd=entry / "initrd.img",
        root_disk=entry / "root.ext4",
        cmdline=CMDLINE,
        kernel_release=kver,
        deb=deb.name,
        build_seconds=seconds,
        cached=cached,
    )


def _build_entry(
    cache_dir: Path,
    entry: Path,
    key: str,
    sysroot: Path,
    deb: Path,
    kernel: Path,
    kver: str,
    kernel_pkg: str,
    pkgs: list[Package],
) -> dict:
    t0 = time.monotonic()
    debs = fetch_packages(cache_dir, pkgs)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-sysimage-", dir=cache_dir))
    try:
        work, out = tmp / "work", tmp / "out"
        root = work / "root"
        root.mkdir(parents=True)
        out.mkdir()
        _run(["tar", "--numeric-owner", "--xattrs", "-xpf", str(sysroot / "rootfs.tar"),
              "-C", str(root)])  # fmt: skip
        _dpkg_extract(debs[kernel_pkg], work / "kernel")
        moddir = work / "kernel/lib/modules" / kver
        root_modules = _place_modules(root, moddir, kver)
        installed = _install_deb(root, deb)
        _configure(root)
        stage1 = _stage1_initrd(out / "initrd.img", moddir, debs["busybox-static"], work)
        size = _mkfs(root, out / "root.ext4")
        cache._link_or_copy(kernel, out / kernel.name)
        manifest = {
            "key": key,
            "sysroot": sysroot.name,
            "deb": deb.name,
            "deb_status": installed,
            "kernel_release": kver,
            "stage1_modules": stage1,
            "root_modules": root_modules,
            "root_disk_bytes": size,
            "build_seconds": round(time.monotonic() - t0, 1),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(work)
        cache._publish(out, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--deb", type=Path, required=True, help="the gagent-guest .deb")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    try:
        image = build_systemd_image(args.deb, args.cache_dir, force=args.force)
    except BuildError as exc:
        print(f"systemd_image: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: str(v) for k, v in dataclasses.asdict(image).items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The base image: what goes into the kernel, base initramfs and data disk, and how.

This is the part of the guest that does not depend on the Python trees
(``build.py`` caches it as ``base-<key>/`` and overlays the trees on it); the
constants below are its recipe, and ``build.py``'s docstring describes the
result.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

from .common import HERE, REPO, BuildError, _log, _run
from .cpio import Cpio
from .debs import Package, _dpkg_extract
from .debs import resolve_packages as _resolve
from .kernel import module_groups, pvh_vmlinux, select_modules
from .rootfs import _canonical, _ldd, _place, _usrmerge

INIT_SCRIPT = HERE / "init.sh"
SYSVINIT_SCRIPT = REPO / "packaging" / "sysvinit" / "gagent-qga"
#: The fsfreeze hook (which arms the freeze dead-man's switch) and its deadline,
#: installed as the packages install them (the sysvinit script then runs qemu-ga -F).
FREEZE_FILES = {
    "etc/gagent/fsfreeze-hook": (REPO / "packaging" / "fsfreeze" / "fsfreeze-hook", 0o755),
    "etc/gagent/deadman.conf": (REPO / "packaging" / "fsfreeze" / "deadman.conf", 0o644),
}

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
# Uncompressed cpio: under TCG the kernel unpacked the 55 MB archive in 0.6 s,
# but needed 2.2 s for the same archive gzipped (20 MB); QEMU loading the
# bigger file costs next to nothing.
COMPRESS_INITRD = False
# Precompile the Debian stdlib (Debian ships no .pyc; its postinst builds
# them) so the first python3 in the guest does not compile under TCG.
PRECOMPILE_STDLIB = True
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
        **{rel: (path.read_bytes(), mode) for rel, (path, mode) in FREEZE_FILES.items()},
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


def resolve_packages(cache_dir: Path) -> tuple[str, list[Package]]:
    """Return (kernel package name, all packages) of the base image, memoised per apt state."""
    return _resolve(cache_dir, KERNEL_META_PACKAGE, USERLAND_PACKAGES)


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

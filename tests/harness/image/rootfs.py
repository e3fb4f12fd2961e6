"""Lay out a guest's root tree on the host: merged ``/usr``, files, host shared libraries.

The tree is an ordinary directory that becomes an initramfs or a disk image;
paths inside it are relative (``usr/bin/...``) and never touch the host's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .common import BuildError

MERGED_USR = ("bin", "sbin", "lib", "lib64")


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

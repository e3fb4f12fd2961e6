"""A minimal writer of cpio ``newc`` archives, the format of a Linux initramfs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .common import BuildError


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

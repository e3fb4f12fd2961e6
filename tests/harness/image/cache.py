"""Cache-entry plumbing shared by the image builders (``build.py``, ``systemd_image.py``).

An entry is a directory with a ``manifest.json`` (its ``key`` says what it was
built from); it is built in a temp dir and published by renaming it into place,
under a lock file that serialises concurrent builders.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .common import _sha256_file


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


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def hash_sources(h, paths: Iterable[Path]) -> None:
    """Feed each file's name and contents to the hash ``h`` (a builder's own source).

    Only the base name goes in, never the path: a key must not depend on where
    the checkout is.
    """
    for path in paths:
        h.update(f"source\0{path.name}\n".encode())
        h.update(path.read_bytes())

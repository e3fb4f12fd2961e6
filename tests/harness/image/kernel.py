"""The guest kernel's pieces: module metadata and load order, and the PVH ``vmlinux``.

The kernel package ships no ``modules.dep`` (depmod runs at install time), so
load order comes from each module's own ``.modinfo``; ``pvh_vmlinux`` unpacks
the ELF inside a bzImage so that QEMU can boot it through its PVH entry point.
"""

from __future__ import annotations

import gzip
import lzma
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from .common import BuildError


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

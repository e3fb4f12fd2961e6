"""Layering rules, enforced.

* the sans-IO core (gagent.protocol, gagent.errors) never imports trio;
* nothing in the core package (gagent/, but not gagent.host / gagent.guest,
  which live in the repository's host/ and guest/ folders) imports libvirt or lxml;
* the guest helper (guest/) imports neither trio, libvirt, lxml, msgspec (the host's
  reply decoding) nor host code.

Imports are checked in a fresh interpreter (sys.modules) and by an AST scan
of the files (import statements, ``importlib.import_module("x")`` and
``__import__("x")`` with literal names, at any depth, including inside functions).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "gagent"
GUEST = REPO / "guest"

#: Where each package's files live, as installed (pyproject's package-dir).
PACKAGE_DIRS = {
    name: str(REPO / folder)
    for name, folder in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].items()
}

# ------------------------------------------------------------ subprocesses

_PRELUDE = r"""
import importlib.abc, importlib.util, json, sys, types
MAPPING = json.loads(sys.argv[1])
BYPASS_INIT = sys.argv[2] == "bypass"

class Finder(importlib.abc.MetaPathFinder):
    # the install layout (gagent.host -> host/, ...), whatever is installed
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MAPPING:
            where = MAPPING[fullname]
            return importlib.util.spec_from_file_location(
                fullname, where + "/__init__.py", submodule_search_locations=[where]
            )
        return None

sys.meta_path.insert(0, Finder())
if BYPASS_INIT:
    # load gagent's modules without running gagent/__init__.py
    package = types.ModuleType("gagent")
    package.__path__ = [MAPPING["gagent"]]
    sys.modules["gagent"] = package
before = set(sys.modules)
for name in sys.argv[3:]:
    importlib.import_module(name)
loaded = sorted(set(sys.modules) - before)
print(json.dumps(loaded))
"""

HEAVY = {"trio", "outcome", "sniffio", "anyio", "libvirt", "lxml"}


def _loaded_by(modules: list[str], *, bypass_init: bool, tmp_path: Path) -> set[str]:
    """Top-level names of the modules that importing ``modules`` loads, in a new interpreter."""
    result = subprocess.run(
        [
            sys.executable,
            "-I",  # no PYTHONPATH, no user site, no cwd on sys.path
            "-c",
            _PRELUDE,
            json.dumps(PACKAGE_DIRS),
            "bypass" if bypass_init else "normal",
            *modules,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {name.split(".")[0] for name in json.loads(result.stdout)}


def test_sans_io_modules_themselves_import_no_trio(tmp_path: Path) -> None:
    loaded = _loaded_by(["gagent.errors", "gagent.protocol"], bypass_init=True, tmp_path=tmp_path)
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
    assert "msgspec" not in loaded  # typed decoders are handed in, not imported


def test_the_check_does_see_trio(tmp_path: Path) -> None:
    # the subprocess machinery must be able to fail
    loaded = _loaded_by(["gagent.client"], bypass_init=True, tmp_path=tmp_path)
    assert "trio" in loaded


@pytest.mark.parametrize("module", ["gagent.protocol", "gagent.errors", "gagent.guest"])
def test_importing_core_module_does_not_import_trio(tmp_path: Path, module: str) -> None:
    loaded = _loaded_by([module], bypass_init=False, tmp_path=tmp_path)
    assert "trio" not in loaded


# ---------------------------------------------------------------- AST scan


def _module_name(path: Path) -> tuple[str, bool]:
    """(dotted name as installed, is_package) of a file under gagent/, host/ or guest/."""
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[1])):
        base = Path(folder)
        if path.is_relative_to(base):
            parts = list(path.relative_to(base).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            return ".".join([package, *parts]), is_package
    raise ValueError(f"{path} is in no package")


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module ``source`` (module ``module``) may import."""
    tree = ast.parse(source)
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(package_parts) - (node.level - 1)
                base = ".".join(package_parts[: max(keep, 0)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def _matches(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _core_files() -> list[Path]:
    # gagent/ only; gagent.host and gagent.guest live in host/ and guest/
    return [
        p for p in _files(CORE) if not ({"host", "guest"} & set(p.relative_to(CORE).parts[:-1]))
    ]


def _scan(path: Path) -> set[str]:
    module, is_package = _module_name(path)
    return imports_of(path.read_text(), module, is_package=is_package)


def test_scan_finds_every_kind_of_import() -> None:
    source = (
        "import libvirt\n"
        "from lxml import etree\n"
        "def later():\n"
        "    import trio.testing\n"
        "    importlib.import_module('libvirt_qemu')\n"
        "    __import__('lxml.objectify')\n"
        "from ..host import virt\n"
        "from .. import host as h\n"
        "from . import helper\n"
    )
    found = imports_of(source, "gagent.guest.cli")
    assert {"libvirt", "lxml", "trio.testing", "libvirt_qemu", "lxml.objectify"} <= found
    assert {"gagent.host", "gagent.host.virt", "gagent.guest.helper"} <= found
    assert imports_of("from . import x\n", "gagent.guest", is_package=True) == {
        "gagent.guest",
        "gagent.guest.x",
    }


def test_core_files_exist_to_scan() -> None:
    names = {p.name for p in _core_files()}
    assert {"__init__.py", "protocol.py", "errors.py", "client.py"} <= names


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_core_does_not_import_libvirt_or_lxml(path: Path) -> None:
    bad = {name for name in _scan(path) if _matches(name, {"libvirt", "libvirt_qemu", "lxml"})}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}: that belongs in host/"


@pytest.mark.parametrize(
    "path",
    [CORE / "protocol.py", CORE / "protocol_json.py", CORE / "errors.py"],
    ids=["protocol", "protocol_json", "errors"],
)
def test_sans_io_files_import_no_io_framework(path: Path) -> None:
    bad = {name for name in _scan(path) if _matches(name, {"trio", "anyio", "asyncio"})}
    assert not bad


GUEST_FORBIDDEN = {"trio", "libvirt", "libvirt_qemu", "lxml", "host", "gagent.host", "msgspec"}


def _transitive(names: set[str], seen: set[str] | None = None) -> set[str]:
    """``names`` plus what the gagent core modules among them import, recursively.

    The bare package ``gagent`` (its __init__) is not followed: that one is the
    packaging question tested above, not the guest code's doing.
    """
    seen = set() if seen is None else seen
    out = set(names)
    for name in names:
        if name in seen or not name.startswith("gagent.") or name.startswith("gagent.guest"):
            continue
        seen.add(name)
        rest = name.split(".")[1:]
        candidates = [CORE.joinpath(*rest).with_suffix(".py"), CORE.joinpath(*rest, "__init__.py")]
        for candidate in candidates:
            if candidate.is_file():
                out |= _transitive(_scan(candidate), seen)
    return out


@pytest.mark.parametrize("path", _files(GUEST), ids=lambda p: str(p.relative_to(REPO)))
def test_guest_imports_no_trio_libvirt_lxml_or_host(path: Path) -> None:
    direct = _scan(path)
    bad = {name for name in _transitive(direct) if _matches(name, GUEST_FORBIDDEN)}
    assert not bad, f"{path.relative_to(REPO)} pulls in {sorted(bad)}"


def test_guest_folder_exists_to_scan() -> None:
    assert (GUEST / "__init__.py").is_file()

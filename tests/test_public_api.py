"""The public API is where a user looks: ``help(gagent)``, ``dir()``, ``gagent.host``, a
docstring on every public command, and types a checker sees (py.typed, checked with mypy
against the built wheel in tests/host/cli/test_install_parts.py)."""

from __future__ import annotations

import inspect
import json
import pydoc
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import gagent
import gagent.host


@pytest.mark.parametrize("package", [gagent, gagent.host], ids=["gagent", "gagent.host"])
def test_every_public_name_resolves_and_is_listed(package):
    assert package.__all__, package
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package), name
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_help_names_the_api():
    text = pydoc.render_doc(gagent, renderer=pydoc.plaintext)
    for name in ("open_agent", "frozen", "run_program", "gagent.sync", "gagent.host"):
        assert name in text, name
    host_text = pydoc.render_doc(gagent.host, renderer=pydoc.plaintext)
    for name in ("open_domain_agent", "open_domain", "snapshot_group", "emergency_thaw"):
        assert name in host_text, name


#: Python run without gagent[host]: lxml and libvirt cannot be imported.
WITHOUT_HOST_EXTRA = (
    "import sys\n"
    "for name in ('lxml', 'libvirt', 'libvirt_qemu', 'libvirtmod', 'libvirtmod_qemu'):\n"
    "    sys.modules[name] = None\n"
)


def without_host_extra(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_HOST_EXTRA + code],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_host_name_without_the_extra_names_the_extra():
    proc = without_host_extra(
        "import gagent.host\n"
        "try:\n"
        "    gagent.host.open_domain_agent\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc.name, exc, sep='|')\n"
    )
    assert proc.returncode == 0, proc.stderr
    kind, module, message = proc.stdout.strip().split("|")
    assert kind == "ModuleNotFoundError" and module in {"lxml", "libvirt"}, proc.stdout
    assert message == (
        f"gagent.host.open_domain_agent needs {module}, which is not installed: "
        "pip install 'gagent[host]'"
    )


def test_help_of_gagent_host_works_without_the_extra():
    proc = without_host_extra(
        "import pydoc, gagent.host\n"
        "print(pydoc.render_doc(gagent.host, renderer=pydoc.plaintext))\n"
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("open_domain_agent", "open_domain", "snapshot_group", "gagent[host]"):
        assert name in proc.stdout, name


def test_a_module_missing_that_is_no_extra_is_not_renamed(tmp_path, monkeypatch):
    """Only a missing optional part gets the install hint: any other missing module is a
    bug, and keeps its own error."""
    package = tmp_path / "lazy_example"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from gagent import _lazy_exports\n"
        "__getattr__, __dir__ = _lazy_exports(__name__, {'thing': 'broken'}, globals())\n"
    )
    (package / "broken.py").write_text("import no_such_module_of_gagent\nthing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_example  # type: ignore[import-not-found]

    with pytest.raises(ModuleNotFoundError) as caught:
        lazy_example.thing  # noqa: B018
    assert caught.value.name == "no_such_module_of_gagent"
    assert "pip install" not in str(caught.value)


def test_importing_the_packages_loads_no_trio_or_libvirt():
    code = (
        "import json, sys, gagent, gagent.host; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'trio', 'libvirt', 'lxml', 'msgspec'})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def undocumented_public_methods(*packages: ModuleType) -> list[str]:
    """Every public method or property (own or inherited) of every class in the packages'
    ``__all__`` that has no docstring, as package.Class.name."""
    found = []
    for package in packages:
        for class_name in package.__all__:
            cls = getattr(package, class_name)
            if not inspect.isclass(cls):
                continue
            for name, member in inspect.getmembers(cls):
                if name.startswith("_") or not (callable(member) or isinstance(member, property)):
                    continue
                if not (inspect.getdoc(member) or "").strip():
                    found.append(f"{package.__name__}.{class_name}.{name}")
    return found


def test_every_public_method_is_documented():
    import gagent.sync

    found = undocumented_public_methods(gagent, gagent.sync, gagent.host)
    assert sorted(found) == []
    assert "gagent.Agent.osinfo" not in found


def test_the_docstring_walk_finds_a_gap():
    class Documented:
        """A class."""

        def run(self) -> None:
            """Runs."""

        def stop(self) -> None:
            pass

        @property
        def state(self) -> str:
            return ""

    package = ModuleType("example")
    package.__all__ = ["Documented"]  # type: ignore[attr-defined]
    package.Documented = Documented  # type: ignore[attr-defined]
    assert undocumented_public_methods(package) == [
        "example.Documented.state",
        "example.Documented.stop",
    ]


def test_the_core_package_type_checks(tmp_path):
    """What py.typed promises: mypy finds no error in gagent's own annotations (a wrong
    one shows up in a user's script as a false error, or hides a real one)."""
    root = Path(gagent.__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""scripts/gen-sync.py: what it writes is already as ruff formats and checks it (so the
committed file and the regenerated one agree), every kind of parameter is copied and passed on
as written, and a name it cannot import is an error, not a broken module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen-sync.py"
RUFF = Path(sys.executable).with_name("ruff")
TIMEOUT = 120

SAMPLE = '''
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gagent.types import OSInfo

LIMIT = 3


class Sample:
    async def kinds(
        self, first: int, /, second: str = "x", *rest: bytes, flag: bool = False, **more: Any
    ) -> OSInfo | None:
        """Every kind."""

    async def constant(self, limit: int = LIMIT) -> int:
        return limit

    async def unknown(self) -> Missing:
        pass
'''


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_sync", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    (tmp_path / "gen_sync_sample.py").write_text(textwrap.dedent(SAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("gen_sync_sample")
    yield module
    sys.modules.pop("gen_sync_sample", None)


def test_every_kind_of_parameter_is_copied_and_passed_on(sample: ModuleType):
    gen = load_script()
    text, tree = gen.source_tree(sample.Sample)
    command = gen.read_command("kinds", sample.Sample, text, tree)
    assert command.parameters == [
        "self", "first: int", "/", 'second: str = "x"', "*rest: bytes", "flag: bool = False",
        "**more: Any",
    ]  # fmt: skip
    assert command.arguments == ["first", "second", "*rest", "flag=flag", "**more"]
    assert command.returns == "OSInfo | None"
    assert command.docstring == '"""Every kind."""'
    assert command.annotation_names == {"int", "str", "bytes", "bool", "Any", "OSInfo"}
    assert command.default_names == set()
    lines = gen.method(command)
    assert lines[1] == "    def kinds("  # too long for one line: ruff's layout
    assert lines[-1] == "        return self.run(self.commands.kinds(first, second, *rest, "\
        "flag=flag, **more))"  # fmt: skip


def test_a_default_naming_a_constant_is_imported_at_run_time(sample: ModuleType):
    gen = load_script()
    text, tree = gen.source_tree(sample.Sample)
    constant = gen.read_command("constant", sample.Sample, text, tree)
    kinds = gen.read_command("kinds", sample.Sample, text, tree)
    assert constant.parameters == ["self", "limit: int = LIMIT"]
    runtime, typing_only = gen.wanted_imports([constant, kinds])
    assert runtime["gen_sync_sample"] == {"LIMIT"}  # a default is evaluated
    assert {"Any", "TYPE_CHECKING"} <= runtime["typing"]
    assert typing_only["gagent.types"] == {"OSInfo"}  # an annotation is not
    with pytest.raises(SystemExit, match=r"outside the package: \['gen_sync_sample'\]"):
        gen.imports([constant])


def test_a_name_the_module_does_not_bind_is_an_error(sample: ModuleType):
    gen = load_script()
    text, tree = gen.source_tree(sample.Sample)
    command = gen.read_command("unknown", sample.Sample, text, tree)
    with pytest.raises(SystemExit, match="uses Missing, which its module neither imports"):
        gen.imports([command])


@pytest.mark.skipif(not RUFF.exists(), reason="ruff is not installed in this environment")
def test_the_output_is_as_ruff_formats_and_checks_it(tmp_path: Path):
    generated = tmp_path / "sync_commands.py"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(generated)], capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    for check in (["format", "--check", "--diff"], ["check"]):
        ruffed = subprocess.run(
            [str(RUFF), *check, "--config", str(REPO / "pyproject.toml"), str(generated)],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert ruffed.returncode == 0, ruffed.stdout + ruffed.stderr

"""The exit codes gagent documents are the ones it returns: one table (EXIT_CODES) shown by
'gagent --help', every error class's code in it, the subcommands' help and the README agreeing."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from click.testing import CliRunner

from gagent.host.cli import EXIT_CODES, cli, exit_code_for
from gagent.host.cli import migrate as migrate_cli
from gagent.host.cli.common import Interrupted

README = Path(__file__).resolve().parents[3] / "README.md"


def _every_error_class() -> set[type[BaseException]]:
    # the modules where the tree's classes live (see gagent/errors.py)
    import gagent.freeze
    import gagent.host.cli.common
    import gagent.host.inventory
    import gagent.host.snapshot

    found, todo = set(), [gagent.errors.GagentError]
    while todo:
        kind = todo.pop()
        found.add(kind)
        todo.extend(kind.__subclasses__())
    return found


def test_every_error_class_maps_to_a_documented_code():
    for kind in _every_error_class():
        error = kind.__new__(kind)  # no __init__: only its class matters here
        assert exit_code_for(error) in EXIT_CODES, kind


def test_signal_and_migration_codes_are_documented():
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert Interrupted(signum).exit_code in EXIT_CODES
    for code in (
        migrate_cli.EXIT_CHECK_FAILED,
        migrate_cli.EXIT_WARNINGS_REFUSED,
        migrate_cli.EXIT_MIGRATION_FAILED,
    ):
        assert code in EXIT_CODES


def test_top_level_help_lists_the_table():
    out = CliRunner().invoke(cli, ["--help"]).output
    listed = dict(re.findall(r"^\s+(\d+)\s+(.+)$", out.split("Exit codes:")[1], re.M))
    assert {int(code): text for code, text in listed.items()} == EXIT_CODES


def _codes_in_help(*words: str) -> set[int]:
    out = CliRunner().invoke(cli, [*words, "--help"], terminal_width=200).output
    text = " ".join(out.split("Exit codes:")[1].split())
    return {int(c) for c in re.findall(r"(?:^|[;:,] )(\d+) ", text)}


def test_subcommand_help_states_codes_of_the_table():
    for words, expected in ((("thaw",), {0, 3, 4, 8, 9}), (("status",), {0, 3, 4, 13})):
        codes = _codes_in_help(*words)
        assert codes == expected, words
        assert codes <= set(EXIT_CODES)


def test_readme_names_every_code():
    text = " ".join(README.read_text().split())
    paragraph = text.split("Exit codes: ")[1].split("Every error prints")[0]
    for code in EXIT_CODES:
        assert re.search(rf"\b{code}\b", paragraph), code

"""``gagent agent call``'s guard for guest-sync-delimited, against the real qemu-ga (the
rest of ``call``: tests/host/cli/test_agent_cli.py)."""

from __future__ import annotations

import shlex

import pytest

from gagent.host.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "call_words",
    [
        ["guest-sync-delimited", '{"id": 7}'],
        ['{"execute": "guest-sync-delimited", "arguments": {"id": 7}}'],
    ],
    ids=["name", "request"],
)
def test_guest_sync_delimited_is_refused_with_the_command_that_works(capsys, qemu_ga, call_words):
    sock = str(qemu_ga.socket_path)
    code, out, err = run(capsys, "agent", "--socket", sock, "call", *call_words)
    assert (code, out) == (2, ""), err
    [line] = err.splitlines()
    assert line.startswith("gagent: error: gagent sends guest-sync-delimited by itself"), line
    suggested = shlex.split(line.partition("to see the agent echo an id: ")[2])
    assert suggested == ["gagent", "agent", "--socket", sock, "call", "guest-sync", '{"id": 7}']
    code, out, err = run(capsys, *suggested[1:])
    assert (code, out.strip(), err) == (0, "7", "")


def test_a_refused_call_names_the_domain_and_uri(capsys):
    code, _, err = run(
        capsys, "agent", "vm1", "-c", "test:///default", "call", "guest-sync-delimited"
    )
    assert code == 2
    assert err.strip().endswith(
        """gagent agent vm1 -c test:///default call guest-sync '{"id": 1}'"""
    ), err

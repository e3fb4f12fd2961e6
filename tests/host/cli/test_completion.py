"""Shell completion through click's own protocol (``_GAGENT_COMPLETE``), in a fresh
``gagent`` process as a shell runs it: DOMAIN completes with the domains of the
connection (libvirt's test:///default), and completion offers nothing, without a
traceback and within its bound, when libvirt is missing, refuses or hangs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

GAGENT = Path(sys.executable).with_name("gagent")
TEST_URI = "test:///default"
TIMEOUT = 60  # for subprocesses: far above completion's own bound

#: gagent's entry point with libvirt made unimportable
WITHOUT_LIBVIRT = """
import sys
sys.modules["libvirt"] = None
sys.modules["libvirt_qemu"] = None
from gagent.host.cli import main
sys.exit(main())
"""


def complete(line: str, *, uri: str | None = TEST_URI, program=None) -> subprocess.CompletedProcess:
    """What bash's completion gets for ``line`` (the word being completed is its last)."""
    words = line.split(" ")
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    env.update(_GAGENT_COMPLETE="bash_complete", COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    if uri:
        env["LIBVIRT_DEFAULT_URI"] = uri
    argv = program or [str(GAGENT)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def offered(line: str, **kwargs) -> list[str]:
    proc = complete(line, **kwargs)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    return [row.partition(",")[2] for row in proc.stdout.splitlines() if row]


def test_bash_source_is_clicks_script():
    env = {**os.environ, "_GAGENT_COMPLETE": "bash_source"}
    proc = subprocess.run([str(GAGENT)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0
    assert "_GAGENT_COMPLETE=bash_complete" in proc.stdout
    assert "complete -o nosort -F" in proc.stdout


@pytest.mark.parametrize(
    "line",
    [
        "gagent status ",
        "gagent status t",
        "gagent channel list ",
        "gagent agent --domain ",
        "gagent migrate-check ",
        "gagent fsfreeze status ",
        "gagent snapshot create ",
        "gagent thaw ",
    ],
)
def test_domain_arguments_complete_from_the_default_uri(line):
    assert offered(line) == ["test"]


def test_domain_completes_from_the_uri_given_before(line="gagent -c test:///default status "):
    assert offered(line, uri=None) == ["test"]
    assert offered("gagent status -c test:///default ", uri=None) == ["test"]


def test_a_prefix_no_domain_has_offers_nothing():
    assert offered("gagent status x") == []


def test_agent_offers_domains_and_commands_before_the_command():
    words = offered("gagent agent ")
    assert "test" in words and "ping" in words and "fsfreeze" in words
    after_domain = offered("gagent agent test ")
    assert "test" not in after_domain and "ping" in after_domain
    assert offered("gagent agent test fsfreeze ") == ["freeze", "status", "thaw"]


def test_unreachable_libvirt_offers_nothing():
    assert offered("gagent status ", uri="qemu+unix:///system?socket=/nonexistent/gagent") == []


def test_a_hung_libvirtd_offers_nothing_within_the_bound(tmp_path):
    """A socket that accepts and never answers: completion gives up (2 s) and exits."""
    path = tmp_path / "hung.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen(4)
        uri = f"qemu+unix:///system?socket={path}"
        assert offered("gagent status ", uri=uri) == []
        assert "ping" in offered("gagent agent ", uri=uri)  # the commands still come


def test_without_libvirt_domains_offer_nothing_and_commands_still_complete():
    program = [sys.executable, "-c", WITHOUT_LIBVIRT]
    assert offered("gagent status ", program=program) == []
    assert "ping" in offered("gagent agent ", program=program)

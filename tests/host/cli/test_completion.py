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


# ------------------------------------------- bash splits a URI at ':' (COMP_WORDBREAKS)

URI_LINE = "gagent -c test:///default status t"
#: COMP_WORDS as bash splits URI_LINE: ':' is a word of its own
BASH_WORDS = ["gagent", "-c", "test", ":", "///default", "status", "t"]


def bash_env(line: str, words: list[str]) -> dict[str, str]:
    """The environment click's bash script, and ours, give ``gagent`` for ``line``."""
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    env.update(
        _GAGENT_COMPLETE="bash_complete",
        COMP_WORDS="\n".join(words),  # the script joins them with its IFS, a newline
        COMP_CWORD=str(len(words) - 1),
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
    )
    return env


def test_a_uri_bash_split_at_colon_is_read_whole_from_the_line():
    env = bash_env(URI_LINE, BASH_WORDS)
    proc = subprocess.run([str(GAGENT)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "plain,test\n")
    # and the word after a space is empty: every domain of that URI
    line = URI_LINE.removesuffix("t")
    env = bash_env(line, [*BASH_WORDS[:-1], ""])
    proc = subprocess.run([str(GAGENT)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stdout) == (0, "plain,test\n")


def test_the_line_is_read_only_up_to_the_cursor():
    env = bash_env(URI_LINE + " --json", [*BASH_WORDS, "--json"])
    env.update(COMP_POINT=str(len(URI_LINE)), COMP_CWORD=str(len(BASH_WORDS) - 1))
    proc = subprocess.run([str(GAGENT)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stdout) == (0, "plain,test\n")


def test_offers_are_cut_to_the_word_bash_replaces(monkeypatch):
    """Completing ``x:y`` bash replaces ``y`` only: an offer ``x:yz`` goes back as ``yz``."""
    from click.shell_completion import CompletionItem, get_completion_class

    import gagent.host.cli.completion  # noqa: F401  (registers the bash class, as main does)
    from gagent.host.cli import cli

    complete = get_completion_class("bash")(cli, {}, "gagent", "_GAGENT_COMPLETE")
    for name, value in bash_env("gagent status x:y", ["gagent", "status", "x", ":", "y"]).items():
        monkeypatch.setenv(name, value)
    assert complete.get_completion_args() == (["status"], "x:y")
    assert complete.format_completion(CompletionItem("x:yz")) == "plain,yz"


def test_real_bash_completes_the_domain_after_a_uri(tmp_path):
    """click's bash script as sourced, run by bash with the words and line readline sets."""
    words = " ".join(f"'{w}'" for w in BASH_WORDS)
    script = (
        "source <(_GAGENT_COMPLETE=bash_source gagent) || exit 9\n"
        f"COMP_WORDS=({words}); COMP_CWORD={len(BASH_WORDS) - 1}\n"
        f"COMP_LINE='{URI_LINE}'; COMP_POINT={len(URI_LINE)}\n"
        "_gagent_completion gagent\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    env["PATH"] = f"{GAGENT.parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "test\n")


def test_zsh_keeps_clicks_completion_which_gets_whole_words():
    from click.shell_completion import ZshComplete, get_completion_class

    import gagent.host.cli  # noqa: F401  (registers gagent's classes)

    assert get_completion_class("zsh") is ZshComplete
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    env.update(_GAGENT_COMPLETE="zsh_complete", COMP_WORDS=URI_LINE, COMP_CWORD="4")
    proc = subprocess.run([str(GAGENT)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stdout.splitlines()) == (0, ["plain", "test", "_"])
    env["_GAGENT_COMPLETE"] = "zsh_source"
    proc = subprocess.run([str(GAGENT)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert "COMP_LINE" not in proc.stdout and "zsh_complete" in proc.stdout

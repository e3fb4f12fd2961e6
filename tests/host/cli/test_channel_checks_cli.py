"""`gagent channel add/remove` refusals as the operator sees them: one line, exit 2, nothing
changed (in-process, against libvirt's test driver test:///default)."""

from __future__ import annotations

import socket

import pytest
from libvirt_domains import xmls

from gagent.host.channel import GAGENT_CHANNEL, find_channel
from gagent.host.cli import main

URI = "test:///default"
CHOOSE = "choose another path, or leave --path out to let libvirt choose one"


@pytest.fixture(autouse=True)
def private_locks(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, conn, domain: str, *argv: str) -> str:
    """The command must exit 2 with one 'gagent: error:' line and change nothing."""
    before = xmls(conn, domain)
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, ""), err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gagent: error: "), err
    assert xmls(conn, domain) == before
    return lines[0].removeprefix("gagent: error: ")


def test_add_with_an_empty_name_is_refused_not_defaulted(capsys, conn, make_domain):
    name = make_domain()
    message = refused(capsys, conn, name, "channel", "add", name, "-c", URI, "--name", "")
    assert message == (
        f"the channel name is empty: give a name with --name (or leave --name out for "
        f"{GAGENT_CHANNEL})"
    )


def test_remove_with_an_empty_name_is_refused(capsys, conn, make_domain):
    channel = (
        f"    <channel type='unix'><source mode='bind'/>"
        f"<target type='virtio' name='{GAGENT_CHANNEL}'/></channel>\n"
    )
    name = make_domain(channel)
    message = refused(capsys, conn, name, "channel", "remove", name, "-c", URI, "--name", "")
    assert message.startswith("the channel name is empty: give the name of the channel")


@pytest.mark.parametrize("bad", ["a/b", "../../x", "has space", "-x", "a,b"])
def test_add_with_bad_characters_is_refused(capsys, conn, make_domain, bad):
    name = make_domain(start=False)
    message = refused(capsys, conn, name, "channel", "add", name, "-c", URI, "--name", bad)
    assert message.startswith(f"invalid channel name {bad!r}: use letters, digits")


def test_add_over_a_regular_file_is_refused_and_the_file_kept(capsys, conn, make_domain, tmp_path):
    name = make_domain()
    path = tmp_path / "app.conf"
    path.write_text("setting = 1\n")
    message = refused(capsys, conn, name, "channel", "add", name, "-c", URI, "--path", str(path))
    assert message == (
        f"socket path {path} is an existing regular file, not a socket: QEMU would delete it "
        f"to make its socket; {CHOOSE}"
    )
    assert path.read_text() == "setting = 1\n"


def test_add_with_another_domains_socket_is_refused(capsys, conn, make_domain, tmp_path):
    path = str(tmp_path / "g2.sock")
    other = make_domain(
        f"    <channel type='unix'><source mode='bind' path='{path}'/>"
        f"<target type='virtio' name='{GAGENT_CHANNEL}'/></channel>\n"
    )
    name = make_domain()
    message = refused(capsys, conn, name, "channel", "add", name, "-c", URI, "--path", path)
    assert message.startswith(
        f"socket path {path} is already used by domain {other} (channel {GAGENT_CHANNEL}, "
        "running): "
    )


def test_add_over_a_live_socket_is_refused(capsys, conn, make_domain, tmp_path):
    name = make_domain()
    path = str(tmp_path / "live.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        message = refused(capsys, conn, name, "channel", "add", name, "-c", URI, "--path", path)
    assert message.startswith(f"something is listening on socket {path} and no domain")


def test_add_with_a_free_path_still_works(capsys, conn, make_domain, tmp_path):
    name = make_domain(start=False)
    path = str(tmp_path / "free.sock")
    code, out, err = run(capsys, "channel", "add", name, "-c", URI, "--path", path)
    assert (code, err) == (0, "")
    assert out.startswith(f"added channel {GAGENT_CHANNEL} (unix socket {path})")
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL).path == path

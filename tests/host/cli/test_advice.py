"""Every piece of recovery advice is a command that works: each advice-bearing error is
provoked on libvirt's test driver (a node file, so another process sees the same domains),
the command it prints is parsed out of the one error line and run, and it succeeds."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.cli import main

GAGENT = str(Path(sys.executable).with_name("gagent"))


TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
#: libvirt's virDomainState numbers, as the test driver's <test:runstate> takes them
RUNSTATE = {"running": 1, "paused": 3, "shutoff": 5}


def node(tmp_path: Path, *, state: str = "running", channels: str = "") -> str:
    """A test:/// node file with one domain 'vm1'; every connection reads it afresh."""
    path = tmp_path / "node.xml"
    path.write_text(
        f"""<node><domain type='test' xmlns:test='{TEST_NS}'><name>vm1</name>
<memory>1048576</memory><os><type>hvm</type></os>
<devices><controller type='virtio-serial' index='0'/>{channels}</devices>
<test:runstate>{RUNSTATE[state]}</test:runstate></domain></node>"""
    )
    return f"test://{path}"


def gagent(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def advised(err: str) -> list[list[str]]:
    """The commands an error line advises (each in one piece: 'gagent ...' or 'virsh ...')."""
    (line,) = err.splitlines()
    found = re.findall(r"((?:gagent|virsh) [^()';]+?)(?:\)|'|, or | && |$)", line)
    pieces = [shlex.split(c) for c in found]
    assert pieces, line
    return pieces


def run_advice(capsys, argv: list[str]) -> int:
    if argv[0] == "gagent":
        return gagent(capsys, *argv[1:])[0]
    return subprocess.run(argv, capture_output=True, timeout=60).returncode


def test_no_channel_advises_channel_add_on_this_connection(capsys, tmp_path):
    uri = node(tmp_path)
    code, _out, err = gagent(capsys, "agent", "vm1", "-c", uri, "ping")
    assert code == 3
    (argv,) = advised(err)
    assert argv == ["gagent", "channel", "add", "vm1", "-c", uri]
    assert run_advice(capsys, argv) == 0


def test_no_libvirt_channel_advises_the_libvirt_managed_add(capsys, tmp_path):
    uri = node(tmp_path)
    code, _out, err = gagent(capsys, "agent", "vm1", "-c", uri, "--transport", "libvirt", "ping")
    assert code == 3
    (argv,) = advised(err)
    assert argv == ["gagent", "channel", "add", "vm1", "-c", uri, "--name",
                    LIBVIRT_AGENT_CHANNEL, "--libvirt-managed"]  # fmt: skip
    assert run_advice(capsys, argv) == 0


def test_a_broken_channel_advises_remove_and_add_of_that_very_channel(capsys, tmp_path):
    pty = f"<channel type='pty'><target type='virtio' name='{GAGENT_CHANNEL}'/></channel>"
    uri = node(tmp_path, channels=pty)
    code, _out, err = gagent(capsys, "agent", "vm1", "-c", uri, "--transport", "socket", "ping")
    assert code == 3
    remove, add = advised(err)
    assert remove == ["gagent", "channel", "remove", "vm1", "-c", uri, "--name", GAGENT_CHANNEL]
    assert add == ["gagent", "channel", "add", "vm1", "-c", uri, "--name", GAGENT_CHANNEL]
    assert run_advice(capsys, remove) == 0
    # a node file is read afresh by every connection: the add meets the domain as the
    # remove leaves it (with libvirtd, the definition the remove wrote)
    assert node(tmp_path) == uri
    assert run_advice(capsys, add) == 0


@pytest.mark.parametrize(("state", "verb"), [("shutoff", "start"), ("paused", "resume")])
def test_a_stopped_domain_advises_virsh_on_this_connection(capsys, tmp_path, state, verb):
    uri = node(tmp_path, state=state)
    code, _out, err = gagent(capsys, "agent", "vm1", "-c", uri, "ping")
    assert code == 3, err
    (argv,) = advised(err)
    assert argv == ["virsh", "-c", uri, verb, "vm1"]
    assert run_advice(capsys, argv) == 0


def test_a_domain_named_like_an_id_is_advised_by_uuid(capsys, tmp_path):
    # 'gagent ... 1' and 'virsh ... 1' look for ID 1 first: advice must not reach another VM
    path = tmp_path / "node.xml"
    uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f"
    path.write_text(
        f"""<node><domain type='test'><name>vm1</name><memory>1048576</memory>
<os><type>hvm</type></os><devices/></domain>
<domain type='test'><name>1</name><uuid>{uuid}</uuid><memory>1048576</memory>
<os><type>hvm</type></os><devices/></domain></node>"""
    )
    uri = f"test://{path}"
    code, _out, err = gagent(capsys, "agent", uuid, "-c", uri, "ping")
    assert code == 3, err
    (argv,) = advised(err)
    assert argv == ["gagent", "channel", "add", uuid, "-c", uri]
    assert run_advice(capsys, argv) == 0

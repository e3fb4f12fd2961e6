"""Addressing a domain on ``gagent agent``: DOMAIN found by click's own parser, and a
domain named like a command (``info``, ``ping``) reached with ``--domain`` or after
``--``; usage errors without a context traced to their command.  Test-driver domains
whose gagent channel is the real qemu-ga on this host (fixture)."""

from __future__ import annotations

import json
import socket

import libvirt
import pytest

from gagent.host.cli import cli, main
from gagent.host.cli.addressing import usage_context

TEST_URI = "test:///default"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def command_named_domains(qemu_ga):
    """Running test-driver domains named ``info`` and ``ping``, channel to the real qemu-ga."""
    conn = libvirt.open(TEST_URI)
    domains = []
    for name in ("info", "ping"):
        xml = (
            f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
            "<os><type>hvm</type></os><devices><channel type='unix'>"
            f"<source mode='bind' path='{qemu_ga.socket_path}'/>"
            "<target type='virtio' name='org.gagent.agent.0'/></channel></devices></domain>"
        )
        dom = conn.defineXML(xml)
        dom.create()
        domains.append(dom)
    yield
    for dom in domains:
        dom.destroy()
        dom.undefine()
    conn.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["--domain", "info", "ping"],
        ["--domain", "ping", "ping"],
        ["--", "info", "ping"],
        ["--", "ping", "ping"],
        ["--domain=info", "--json", "ping"],
    ],
)
def test_a_domain_named_like_a_command_is_reachable(capsys, command_named_domains, argv):
    code, out, err = run(capsys, "agent", "-c", TEST_URI, *argv)
    assert (code, err) == (0, "")
    assert out.strip() in ("ok", "{}")


def test_options_after_a_separated_domain(capsys, command_named_domains):
    code, out, err = run(capsys, "agent", "-c", TEST_URI, "--", "info", "--json", "hostname")
    assert (code, err) == (0, "")
    assert json.loads(out) == socket.gethostname()


def test_a_command_word_first_is_the_command(capsys, command_named_domains):
    """Without --domain or --, 'info' is the command (and 'ping' an extra argument of it)."""
    code, out, err = run(capsys, "agent", "-c", TEST_URI, "info", "ping")
    assert (code, out) == (2, "")
    assert "unexpected extra argument (ping)" in err


def test_domain_given_twice_is_a_usage_error(capsys):
    code, out, err = run(capsys, "agent", "-c", TEST_URI, "--domain", "info", "vm1", "ping")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "gagent: error: give the domain once: 'vm1' or --domain 'info' (see: gagent agent --help)"
    ]


def test_a_separator_taken_as_an_options_value_is_not_the_end_of_options(capsys, qemu_ga):
    """``--channel --``: click gives '--' to --channel, so 'ping' stays the command."""
    code, out, err = run(capsys, "agent", "--socket", str(qemu_ga.socket_path), "--channel", "--",
                         "ping")  # fmt: skip
    assert (code, out, err) == (0, "ok\n", "")


def test_an_option_missing_its_value_after_a_domain_names_its_command(capsys):
    code, out, err = run(capsys, "agent", "vm1", "fsfreeze", "freeze", "--mountpoint")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "gagent: error: Option '--mountpoint' requires an argument "
        "(see: gagent agent fsfreeze freeze --help)"
    ]


@pytest.mark.parametrize(
    ("words", "path"),
    [
        (["agent", "--timeout"], "gagent agent"),
        (["agent", "-c", "URI", "--", "info", "exec", "--input"], "gagent agent exec"),
        (["agent", "ping"], None),  # nothing wrong with the words
        (["nosuch", "--x"], None),
    ],
)
def test_usage_context(words, path):
    found = usage_context(cli, words, "gagent")
    assert (found.command_path if found else None) == path

"""`gagent channel add --path` with another real guest's socket is refused (two running guests).

On main, the path was taken: the second guest's QEMU bound its socket over the
first one's, `gagent agent` on the first guest then ran commands in the
second, and removing the channel deleted the first guest's socket.
"""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET

import libvirt
import pytest
from harness.image.boot import AgentConnection

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.cli import main

pytestmark = pytest.mark.e2e

HIJACK_CHANNEL = "org.gagent.hijack.0"


def gagent(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def channel_paths(xml: str) -> dict[str, str | None]:
    """Virtio channel name -> socket path, parsed apart from the code under test."""
    found = {}
    for channel in ET.fromstring(xml).iter("channel"):
        target, source = channel.find("target"), channel.find("source")
        if target is not None and target.get("name"):
            found[target.get("name")] = source.get("path") if source is not None else None
    return found


def host_name_on(path) -> str:
    with AgentConnection(path) as agent:
        agent.sync(timeout=30)
        return agent.execute("guest-get-host-name")["host-name"]


def test_channel_add_refuses_another_real_guests_socket(capsys, main_domain, doomed_domain):
    victim, thief = main_domain, doomed_domain
    capsys.readouterr()  # the fixtures' boot reports
    victim_live = channel_paths(victim.dom.XMLDesc(0))
    targets = {
        f"channel {GAGENT_CHANNEL}": str(victim.socket_path),  # a path we gave
        f"channel {LIBVIRT_AGENT_CHANNEL}": victim_live[LIBVIRT_AGENT_CHANNEL],  # libvirt's
    }
    # ours is a live socket here; libvirt's is in the private daemon's mount namespace,
    # which the domain's XML alone tells about
    assert stat.S_ISSOCK(os.stat(victim.socket_path).st_mode)
    before = (thief.dom.XMLDesc(0), thief.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    reports: list[str] = []
    for use, path in targets.items():
        assert path, use
        code, out, err = gagent(
            capsys, "channel", "add", thief.name, "-c", thief.uri,
            "--name", HIJACK_CHANNEL, "--path", path,
        )  # fmt: skip
        reports.append(f"e2e: hijack of {victim.name}'s {use}: rc {code}: {err.strip()}")
        assert (code, out) == (2, "")
        assert err == (
            f"gagent: error: socket path {path} is already used by domain {victim.name} "
            f"({use}, running): a socket serves one domain, and gagent would reach "
            f"{victim.name}'s guest through it; choose another path, or leave --path out to "
            "let libvirt choose one\n"
        )
    print("\n".join(reports))  # after the last readouterr: shown with -s
    # nothing changed: the thief's XML, the victim's socket, who answers where
    assert (thief.dom.XMLDesc(0), thief.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == before
    assert HIJACK_CHANNEL not in channel_paths(thief.dom.XMLDesc(0))
    assert host_name_on(victim.socket_path) == victim.hostname
    assert host_name_on(thief.socket_path) == thief.hostname

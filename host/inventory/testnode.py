"""Node XML files for libvirt's test driver: a fake hypervisor with many domains.

``test:///ABSOLUTE/PATH.xml`` opens a private, in-process hypervisor holding
the domains of that file (no daemon).  Each file stands for one hypervisor;
the tests and the benchmark scan several of them, named ``NAME=URI`` since
every test-driver URI reports the local host name.

A running domain gets an id; ``running=False`` is ``<test:runstate>5`` (shut
off).  ``agent_socket`` adds gagent's channel pointing at a unix socket, so a
scan with ``--agent`` reaches whatever listens there (a real qemu-ga, a fake).
"""

from __future__ import annotations

import os
import uuid as uuid_module
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from ..channel import GAGENT_CHANNEL

__all__ = ["NodeDomain", "node_xml", "write_node"]

_TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
_SHUTOFF = 5  # VIR_DOMAIN_SHUTOFF


@dataclass
class NodeDomain:
    name: str
    running: bool = True
    cpu: int = 2
    memory_mib: int = 2048
    uuid: str | None = None
    #: (bridge, mac) per interface
    nics: list[tuple[str, str]] = field(default_factory=list)
    #: file paths of disks
    disks: list[str] = field(default_factory=list)
    agent_socket: str | None = None
    #: elements under <metadata> (a manager's, see gagent.host.managed)
    metadata: str = ""

    def xml(self) -> str:
        uuid = self.uuid or str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, f"gagent:{self.name}"))
        devices = []
        for index, path in enumerate(self.disks):
            devices.append(
                f"<disk type='file' device='disk'><source file={quoteattr(path)}/>"
                f"<target dev='vd{chr(ord('a') + index)}' bus='virtio'/></disk>"
            )
        for bridge, mac in self.nics:
            devices.append(
                f"<interface type='bridge'><mac address={quoteattr(mac)}/>"
                f"<source bridge={quoteattr(bridge)}/></interface>"
            )
        if self.agent_socket:
            devices.append(
                f"<channel type='unix'><source mode='bind' path={quoteattr(self.agent_socket)}/>"
                f"<target type='virtio' name='{GAGENT_CHANNEL}'/></channel>"
            )
        state = "" if self.running else f"<test:runstate>{_SHUTOFF}</test:runstate>"
        metadata = f"<metadata>{self.metadata}</metadata>" if self.metadata else ""
        return (
            f"<domain type='test' xmlns:test='{_TEST_NS}'><name>{_text(self.name)}</name>"
            f"<uuid>{uuid}</uuid><memory unit='MiB'>{self.memory_mib}</memory>"
            f"<vcpu>{self.cpu}</vcpu><os><type>hvm</type></os>{metadata}"
            f"<devices>{''.join(devices)}</devices>{state}</domain>"
        )


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def node_xml(domains: Iterable[NodeDomain]) -> str:
    body = "\n".join(d.xml() for d in domains)
    return (
        "<node><cpu><mhz>2000</mhz><model>x86_64</model><active>64</active><nodes>1</nodes>"
        "<sockets>1</sockets><cores>64</cores><threads>1</threads></cpu>"
        f"<memory>{512 * 1024 * 1024}</memory>\n{body}\n</node>\n"
    )


def write_node(path: str | os.PathLike[str], domains: Iterable[NodeDomain]) -> str:
    """Write the node file; returns its ``test:///`` URI (the path made absolute)."""
    path = os.path.abspath(os.fspath(path))
    with open(path, "w", encoding="utf-8") as f:
        f.write(node_xml(domains))
    return f"test://{path}"

"""Private domains on libvirt's built-in test:///default driver, for the host tests.

test:///default is shared by the whole process and resets when its last
connection closes, so tests hold a connection (the ``conn`` fixture) and give
every domain a unique name.
"""

from __future__ import annotations

import uuid

import libvirt

INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


def unique(prefix: str = "gagent-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def domain_xml(name: str, devices: str = "") -> str:
    return (
        f"<domain type='test'>\n  <name>{name}</name>\n  <memory unit='KiB'>65536</memory>\n"
        f"  <os>\n    <type>hvm</type>\n  </os>\n  <devices>\n{devices}  </devices>\n</domain>\n"
    )


def xmls(conn: libvirt.virConnect, name: str) -> tuple[str, str]:
    """The live and the inactive XML of a domain."""
    dom = conn.lookupByName(name)
    return dom.XMLDesc(0), dom.XMLDesc(INACTIVE)

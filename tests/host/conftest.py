"""Fixtures shared by the host tests: a held test:///default connection and a
factory of private domains on it, removed after the test."""

from __future__ import annotations

import libvirt
import pytest
from libvirt_domains import domain_xml, unique

from gagent.host.virt import DEFAULT_URI, open_hypervisor


@pytest.fixture
def conn():
    """A connection to test:///default held for the test (keeps the shared state alive)."""
    c = libvirt.open(DEFAULT_URI)
    yield c
    c.close()


@pytest.fixture
async def hv():
    """gagent's own connection to test:///default (hold ``conn`` too for the shared state)."""
    hypervisor = await open_hypervisor(DEFAULT_URI)
    yield hypervisor
    await hypervisor.close()


@pytest.fixture
def make_domain(conn):
    """Factory: a new test domain (persistent or transient, running or not), cleaned up."""
    names: list[str] = []

    def make(
        devices: str = "",
        *,
        start: bool = True,
        persistent: bool = True,
        name: str | None = None,
    ) -> str:
        name = name or unique()
        if persistent:
            dom = conn.defineXML(domain_xml(name, devices))
            if start:
                dom.create()
        else:
            conn.createXML(domain_xml(name, devices), 0)
        names.append(name)
        return name

    yield make
    for name in names:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            continue  # the test removed it
        persistent = dom.isPersistent()
        if dom.isActive():
            dom.destroy()
        if persistent:
            dom.undefine()

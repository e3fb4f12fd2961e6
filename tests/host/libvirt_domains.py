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


#: (key, namespace, element) as each manager puts it under <metadata>
MANAGER_METADATA = {
    "oVirt/VDSM": (
        "ovirt-vm",
        "http://ovirt.org/vm/1.0",
        "<vm><clusterVersion>4.7</clusterVersion><resumeBehavior>auto_resume</resumeBehavior></vm>",
    ),
    "OpenStack nova": (
        "nova",
        "http://openstack.org/xmlns/libvirt/nova/1.1",
        "<instance><package version='27.1.0'/><name>web-1</name>"
        "<flavor name='m1.small'><memory>2048</memory></flavor></instance>",
    ),
    "KubeVirt": (
        "kubevirt",
        "http://kubevirt.io",
        "<kubevirt><uid>7f0c2b5e-1c1e-4c52-9a43-5d1b9a8f6e11</uid><graceperiod>"
        "<deletionGracePeriodSeconds>30</deletionGracePeriodSeconds></graceperiod></kubevirt>",
    ),
}


def set_manager_metadata(conn: libvirt.virConnect, name: str, manager: str) -> None:
    """Write ``manager``'s metadata into domain ``name`` as the manager does."""
    key, namespace, element = MANAGER_METADATA[manager]
    dom = conn.lookupByName(name)
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, element, key, namespace, flags)

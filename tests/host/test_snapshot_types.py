"""gagent.host.snapshot_types: the disks of a domain XML and the <domainsnapshot> asked for."""

from __future__ import annotations

import pytest
import trio
from test_snapshot import DISKS, FakeDomain

from gagent.errors import UsageError
from gagent.host.snapshot_types import domain_disks, external_targets, snapshot_xml


def test_snapshot_xml_all_writable_disks_by_default():
    xml = snapshot_xml("s1", domain_disks(f"<domain><devices>{DISKS}</devices></domain>"))
    assert "<name>s1</name>" in xml
    assert '<disk name="vda" snapshot="external">\n      <driver type="qcow2"/>' in xml
    assert '<disk name="vdb" snapshot="external">' in xml
    assert '<disk name="sda" snapshot="no"/>' in xml


def test_snapshot_xml_chosen_disks_and_overlay_paths():
    disks = domain_disks(f"<domain><devices>{DISKS}</devices></domain>")
    xml = snapshot_xml("s1", disks, ["vda=/backup/vda.qcow2"], description="nightly")
    assert '<source file="/backup/vda.qcow2"/>' in xml
    assert '<disk name="vdb" snapshot="no"/>' in xml
    assert "<description>nightly</description>" in xml
    for bad, message in ((["vdz"], "no disk 'vdz'"), (["sda"], "read-only")):
        with pytest.raises(UsageError, match=message):
            snapshot_xml("s1", disks, bad)
    with pytest.raises(UsageError, match="bad snapshot name"):
        snapshot_xml("a/b", disks)


def test_domain_disks_reads_the_backing_chain():
    domain = FakeDomain()
    domain.disks["vda"], domain.backing["vda"] = "/img/data.s1", "/img/data.raw"
    disks = {d.target: d for d in domain_disks(trio.run(domain.xml))}
    assert (disks["vda"].source, disks["vda"].backing) == ("/img/data.s1", "/img/data.raw")
    assert disks["sda"].readonly and disks["sda"].device == "cdrom"


def test_external_targets_are_the_disks_not_left_out():
    xml = snapshot_xml("s1", domain_disks(f"<domain><devices>{DISKS}</devices></domain>"))
    assert external_targets(xml) == {"vda", "vdb"}

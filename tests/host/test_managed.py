"""Managed domains (gagent.host.managed): test-driver domains carrying each manager's
metadata, written as the managers write it (virDomainSetMetadata), are refused
persistent channel edits unless forced; the others, and reading, are not."""

from __future__ import annotations

import libvirt
import pytest
import trio
from libvirt_domains import MANAGER_METADATA as METADATA
from libvirt_domains import set_manager_metadata as set_metadata
from libvirt_domains import xmls

from gagent.errors import HostError
from gagent.host.channel import GAGENT_CHANNEL, ChannelSpec, find_channel
from gagent.host.channel_ops import add_to_domain, remove_from_domain
from gagent.host.domxml import parse_domain
from gagent.host.managed import ManagedDomain, manager_of, vdsm_running
from gagent.host.virt import DEFAULT_URI

TIMEOUT = 10


# ---------------------------------------------------------------- pure: manager_of


@pytest.mark.parametrize("manager", sorted(METADATA))
def test_manager_of_reads_each_managers_metadata(conn, make_domain, manager):
    name = make_domain(start=False)
    set_metadata(conn, name, manager)
    _, inactive = xmls(conn, name)
    found = manager_of(parse_domain(inactive))
    assert found is not None
    assert found.name == manager
    assert METADATA[manager][1] in found.evidence
    assert "--transport libvirt" in found.advice


def test_manager_of_a_plain_domain_is_none_unless_vdsmd_runs(conn, make_domain):
    name = make_domain(start=False)
    # metadata of some other tool is no manager
    conn.lookupByName(name).setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<note>x</note>", "me", "http://example.org/mine",
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )  # fmt: skip
    facts = parse_domain(xmls(conn, name)[1])
    assert facts.metadata == [("http://example.org/mine", "note")]
    assert manager_of(facts) is None
    vdsm = manager_of(facts, vdsm_host=True)
    assert vdsm is not None and (vdsm.name, vdsm.evidence) == ("oVirt/VDSM", "its host runs vdsmd")


def test_a_kubevirt_like_name_alone_is_no_manager(conn, make_domain):
    name = make_domain(start=False, name="default_testvmi")
    assert manager_of(parse_domain(xmls(conn, name)[1])) is None


def test_vdsm_running_reads_process_names(tmp_path):
    for pid, comm in (("1", "init"), ("77", "libvirtd")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    assert vdsm_running(tmp_path) is False
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "comm").write_text("vdsmd\n")
    assert vdsm_running(tmp_path) is True
    assert vdsm_running(tmp_path / "missing") is False


# ------------------------------------------------------- channel edits refused


@pytest.mark.parametrize("manager", sorted(METADATA))
async def test_channel_add_refuses_a_managed_definition(conn, hv, make_domain, manager):
    name = make_domain()
    set_metadata(conn, name, manager)
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT), pytest.raises(ManagedDomain) as refused:
        await add_to_domain(await hv.lookup(name), ChannelSpec())
    assert xmls(conn, name) == before
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"domain {name} is managed by {manager} (")
    assert message.endswith(
        f"run: gagent channel add {name} -c {DEFAULT_URI} --name {GAGENT_CHANNEL} --force"
    )


async def test_forced_add_edits_and_warns(conn, hv, make_domain):
    name = make_domain(start=False)
    set_metadata(conn, name, "OpenStack nova")
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(), force=True)
    assert result.changed
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL) is not None
    assert result.messages[-1] == (
        f"warning: OpenStack nova manages {name} (its XML carries OpenStack nova's metadata "
        "(http://openstack.org/xmlns/libvirt/nova/1.1)) and may drop this change when it "
        "defines the domain again"
    )


async def test_remove_is_refused_too_and_a_dry_run_only_warns(conn, hv, make_domain):
    name = make_domain(start=False)
    with trio.fail_after(TIMEOUT):
        await add_to_domain(await hv.lookup(name), ChannelSpec())
        set_metadata(conn, name, "KubeVirt")
        domain = await hv.lookup(name)
        with pytest.raises(ManagedDomain, match="would drop the removal of channel"):
            await remove_from_domain(domain, GAGENT_CHANNEL)
        dry = await remove_from_domain(domain, GAGENT_CHANNEL, dry_run=True)
        forced_dry = await remove_from_domain(domain, GAGENT_CHANNEL, dry_run=True, force=True)
    # the dry run says, in one line, that the real run is refused and how to pass
    (warning,) = [m for m in dry.messages if m.startswith("warning:")]
    assert warning.startswith(
        f"warning: the real run is refused without --force: domain {name} is managed by KubeVirt"
    )
    assert warning.endswith(
        f"run: gagent channel remove {name} -c {DEFAULT_URI} --name {GAGENT_CHANNEL} --force"
    )
    # with --force the real run is not refused: the warning is the forced run's own
    assert forced_dry.messages[-1].startswith(f"warning: KubeVirt manages {name}")
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL) is not None


async def test_a_transient_managed_domain_gets_no_persistent_edit_to_refuse(conn, hv, make_domain):
    """Nothing persistent to lose: the live change is tried (the test driver refuses hot-plug)."""
    name = make_domain(persistent=False)
    set_metadata(conn, name, "oVirt/VDSM")
    assert manager_of(parse_domain(xmls(conn, name)[0])) is not None
    with trio.fail_after(TIMEOUT), pytest.raises(HostError, match="virDomainAttachDeviceFlags"):
        await add_to_domain(await hv.lookup(name), ChannelSpec())

"""Every status path of every built-in check, on fake connections."""

from __future__ import annotations

import pytest
from migration_fakes import (
    DOMAIN_XML,
    UNSUPPORTED,
    FakeAgent,
    FakeDomain,
    FakeHypervisor,
    agent_opener,
    make_context,
    unreachable,
)

from gagent.errors import CommandDisabled, HostError
from gagent.fs_types import FsfreezeStatus
from gagent.host.migration import BUILTIN_CHECKS, MigrationOptions, Status, run_checks
from gagent.host.migration.framework import run_one
from gagent.host.virt import CpuCompatibility, DomainState, NetworkInfo

CHECKS = {c.name: c for c in BUILTIN_CHECKS}


async def status_of(name, **context):
    outcome = await run_one(make_context(**context), CHECKS[name], 5)
    return outcome.status, outcome.message


def dest(**facts):
    return FakeHypervisor(uri="fake:///destination", **facts)


def xml_with(old: str, new: str) -> str:
    assert old in DOMAIN_XML
    return DOMAIN_XML.replace(old, new)


async def test_builtin_names():
    assert list(CHECKS) == [
        "libvirt-version", "hypervisor-type", "hypervisor-version", "cpu", "free-memory",
        "storage", "networks", "name-uuid", "hostdev", "fsfreeze", "guest-agent", "snapshots",
    ]  # fmt: skip


async def test_libvirt_version():
    assert (await status_of("libvirt-version"))[0] is Status.SUCCESS
    status, message = await status_of("libvirt-version", destination=dest(libvirt=8_000_000))
    assert status is Status.WARNING
    assert message == "libvirt differs: 9.0.0 on the source, 8.0.0 (older) on the destination"


async def test_hypervisor_type():
    assert (await status_of("hypervisor-type"))[0] is Status.SUCCESS
    status, message = await status_of("hypervisor-type", destination=dest(hv_type="Xen"))
    assert status is Status.FAIL
    assert "QEMU on the source, Xen on the destination" in message


@pytest.mark.parametrize(
    ("facts", "expected", "words"),
    [
        ({}, Status.SUCCESS, "QEMU 7.2.0 on the destination"),
        ({"hv_version": 8_000_000}, Status.SUCCESS, "8.0.0"),
        ({"hv_version": 6_002_000}, Status.WARNING, "6.2.0 is older than the source's 7.2.0"),
        ({"hv_type": "TEST", "hv_version": 2}, Status.WARNING, "cannot compare versions"),
    ],
)
async def test_hypervisor_version(facts, expected, words):
    status, message = await status_of("hypervisor-version", destination=dest(**facts))
    assert status is expected
    assert words in message


async def test_cpu_compared_on_the_destination_with_the_domain_cpu():
    destination = dest(cpu_answer=CpuCompatibility.SUPERSET)
    status, message = await status_of("cpu", destination=destination)
    assert status is Status.SUCCESS and "superset" in message
    (call,) = destination.compared
    assert "<model>Haswell</model>" in call["xml"]
    assert call["arch"] == "x86_64" and call["virttype"] == "kvm"
    assert call["machine"] == "pc-q35-7.2" and call["emulator"] == "/usr/bin/qemu-system-x86_64"


async def test_cpu_incompatible_is_a_fail():
    status, message = await status_of(
        "cpu", destination=dest(cpu_answer=CpuCompatibility.INCOMPATIBLE)
    )
    assert status is Status.FAIL
    assert message == "the destination's CPU cannot provide the guest's CPU (Haswell)"


async def test_cpu_not_comparable_by_the_driver_is_a_warning():
    status, message = await status_of("cpu", destination=dest(cpu_answer=UNSUPPORTED))
    assert status is Status.WARNING
    assert message.startswith("cannot compare CPUs: not supported by the destination's QEMU")


async def test_cpu_architecture_not_offered_is_a_fail():
    xml = xml_with("arch='x86_64'", "arch='aarch64'")
    status, message = await status_of("cpu", xml=xml)
    assert status is Status.FAIL
    assert "cannot run kvm/aarch64 guests (it offers: qemu/i686, kvm/x86_64, qemu/x86_64)" in (
        message
    )


async def test_cpu_default_model_and_host_passthrough():
    default = xml_with("<cpu mode='custom' match='exact'><model>Haswell</model></cpu>", "")
    assert (await status_of("cpu", xml=default))[0] is Status.SUCCESS
    passthrough = xml_with(
        "<cpu mode='custom' match='exact'><model>Haswell</model></cpu>",
        "<cpu mode='host-passthrough'/>",
    )
    status, message = await status_of("cpu", xml=passthrough)
    assert status is Status.WARNING and "host-passthrough" in message


@pytest.mark.parametrize(
    ("free", "expected", "words"),
    [
        (4 << 30, Status.SUCCESS, "4.0 GiB free, the domain needs up to 2.0 GiB"),
        (1536 << 20, Status.WARNING, "not for its maximum of 2.0 GiB"),
        (512 << 20, Status.FAIL, "512.0 MiB free, the domain uses 1.0 GiB"),
        (UNSUPPORTED, Status.WARNING, "does not report its free memory"),
    ],
)
async def test_free_memory(free, expected, words):
    status, message = await status_of("free-memory", destination=dest(free=free))
    assert status is expected
    assert words in message


async def test_storage_reachable_missing_or_copied():
    assert (await status_of("storage"))[0] is Status.SUCCESS
    status, message = await status_of("storage", destination=dest(volumes=set()))
    assert status is Status.FAIL
    assert message.startswith("not found in any storage pool of the destination: vda (/shared/")
    copied = await status_of(
        "storage", destination=dest(volumes=set()), options=MigrationOptions(copy_storage=True)
    )
    assert copied == (Status.SUCCESS, "1 local disk(s) will be copied (block migration)")


async def test_storage_pool_volumes_and_network_disks():
    xml = xml_with(
        "<disk type='file' device='disk'><source file='/shared/vm1.qcow2'/>",
        "<disk type='volume' device='disk'><source pool='p' volume='v'/>",
    ).replace(
        "<interface",
        "<disk type='network'><source protocol='rbd' name='a/b'/><target dev='vdb'/></disk>"
        "<interface",
        1,
    )
    found = dest(pool_volumes={("p", "v")})
    status, message = await status_of("storage", xml=xml, destination=found)
    assert status is Status.SUCCESS
    assert message == "2 disk(s) reachable on the destination (1 on network storage)"
    status, message = await status_of("storage", xml=xml, destination=dest())
    assert status is Status.FAIL and "vda (volume v of pool p)" in message


async def test_networks():
    assert (await status_of("networks"))[0] is Status.SUCCESS
    status, message = await status_of("networks", destination=dest(nets=[]))
    assert (status, message) == (Status.FAIL, "on the destination: network default is not defined")
    inactive = [NetworkInfo("default", False, "virbr0")]
    status, message = await status_of("networks", destination=dest(nets=inactive))
    assert status is Status.FAIL and "not active" in message


async def test_networks_bridges_and_direct_devices():
    xml = xml_with(
        "<interface type='network'><source network='default'/></interface>",
        "<interface type='bridge'><source bridge='br0'/></interface>"
        "<interface type='direct'><source dev='eth0' mode='bridge'/></interface>",
    )
    assert (await status_of("networks", xml=xml))[0] is Status.SUCCESS
    status, message = await status_of("networks", xml=xml, destination=dest(ifaces=["eth0"]))
    assert (status, message) == (Status.FAIL, "on the destination: bridge br0 does not exist")
    # a bridge a libvirt network owns counts even when host interfaces cannot be listed
    by_network = xml_with(
        "<interface type='network'><source network='default'/></interface>",
        "<interface type='bridge'><source bridge='virbr0'/></interface>",
    )
    status, _ = await status_of("networks", xml=by_network, destination=dest(ifaces=UNSUPPORTED))
    assert status is Status.SUCCESS
    status, message = await status_of("networks", xml=xml, destination=dest(ifaces=UNSUPPORTED))
    assert status is Status.WARNING
    assert message.startswith("cannot verify bridge br0, host device eth0")


async def test_name_uuid():
    assert (await status_of("name-uuid"))[0] is Status.SUCCESS
    same_name = dest(domains={"vm1": FakeDomain("vm1", "00000000-0000-4000-8000-00000000aaaa")})
    status, message = await status_of("name-uuid", destination=same_name)
    assert status is Status.FAIL and "same name vm1" in message
    same_uuid = FakeDomain("other", "00000000-0000-4000-8000-0000000000f1")
    status, message = await status_of(
        "name-uuid", destination=dest(domains={same_uuid.uuid: same_uuid})
    )
    assert status is Status.FAIL
    assert "UUID 00000000-0000-4000-8000-0000000000f1 (domain other" in message


async def test_hostdev():
    assert (await status_of("hostdev"))[0] is Status.SUCCESS
    xml = xml_with(
        "<channel",
        "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/>"
        "<product id='0xbeef'/></source></hostdev>"
        "<interface type='hostdev'><source><address type='pci' domain='0' bus='4' slot='0x10'"
        " function='1'/></source></interface><channel",
    )
    status, message = await status_of("hostdev", xml=xml)
    assert status is Status.FAIL
    assert "usb 0x1234:0xbeef, pci (network interface) 0000:04:10.1" in message


async def test_snapshots():
    assert (await status_of("snapshots"))[0] is Status.SUCCESS
    status, message = await status_of("snapshots", domain=FakeDomain(snapshots=["s1", "s2"]))
    assert status is Status.WARNING and message.startswith("2 snapshot(s) with libvirt metadata")
    status, _ = await status_of("snapshots", domain=FakeDomain(snapshots=UNSUPPORTED))
    assert status is Status.WARNING


async def test_guest_agent():
    assert await status_of("guest-agent") == (Status.SUCCESS, "the agent answers (fake agent)")
    status, message = await status_of("guest-agent", agent=unreachable())
    assert status is Status.WARNING
    assert message.endswith("did not answer: nothing listening on /run/vm1.sock")
    no_channel = xml_with("org.gagent.agent.0", "org.example.other")
    status, message = await status_of("guest-agent", xml=no_channel)
    assert status is Status.WARNING and message.startswith("no agent channel")
    status, _ = await status_of("guest-agent", state=DomainState.SHUTOFF, agent=unreachable())
    assert status is Status.SUCCESS
    # a managed domain: the fix is the manager's way, not a channel add it would refuse
    nova = no_channel.replace(
        "<name>vm1</name>",
        "<name>vm1</name><metadata><nova:instance "
        "xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/></metadata>",
    )
    status, message = await status_of("guest-agent", xml=nova)
    assert status is Status.WARNING and "OpenStack nova manages the domain: " in message
    assert "channel add" not in message
    # gagent's channel named otherwise (--channel): the domain's port under that name counts
    status, _ = await status_of("guest-agent", xml=no_channel, channel_name="org.example.other")
    assert status is Status.SUCCESS
    status, message = await status_of("guest-agent", channel_name="org.example.other")
    assert status is Status.WARNING and message.startswith("no agent channel")


async def test_guest_agent_that_hangs_is_a_warning_after_the_agent_timeout(autojump_clock):
    status, message = await status_of(
        "guest-agent", agent=agent_opener(FakeAgent(hang=True)), agent_timeout=2
    )
    assert status is Status.WARNING
    assert message.endswith("did not answer: no answer within 2s")


async def test_fsfreeze():
    assert await status_of("fsfreeze") == (Status.SUCCESS, "filesystems thawed")
    status, message = await status_of(
        "fsfreeze", agent=agent_opener(FakeAgent(FsfreezeStatus.FROZEN))
    )
    assert status is Status.FAIL
    assert message.startswith("the guest's filesystems are frozen: thaw them first")
    assert "fsfreeze thaw" in message
    assert (await status_of("fsfreeze", agent=unreachable()))[0] is Status.WARNING
    disabled = CommandDisabled("guest-fsfreeze-status", "CommandNotFound", "disabled")
    status, _ = await status_of("fsfreeze", agent=agent_opener(FakeAgent(disabled)))
    assert status is Status.WARNING
    off = await status_of("fsfreeze", state=DomainState.SHUTOFF)
    assert off == (Status.SUCCESS, "the domain is not running: nothing is frozen")
    no_channel = xml_with("org.gagent.agent.0", "org.example.other")
    assert (await status_of("fsfreeze", xml=no_channel))[0] is Status.SUCCESS


async def test_the_agent_is_asked_once_for_both_agent_checks():
    agent = FakeAgent()
    ctx = make_context(agent=agent_opener(agent))
    report = await run_checks(ctx, [CHECKS["guest-agent"], CHECKS["fsfreeze"]])
    assert report.verdict is Status.SUCCESS
    assert agent.pings == 1


async def test_all_builtins_succeed_on_matching_hosts():
    report = await run_checks(make_context(), BUILTIN_CHECKS)
    assert {o.name: o.status.value for o in report.outcomes if o.status is not Status.SUCCESS} == {}


async def test_a_libvirt_error_inside_a_check_is_a_fail():
    broken = dest(caps=HostError("getCapabilities: connection reset by peer", code=38))
    status, message = await status_of("cpu", destination=broken)
    assert status is Status.FAIL
    assert message == (
        "the check could not run: HostError: getCapabilities: connection reset by peer"
    )


async def test_cpu_host_model_is_left_to_the_destination():
    xml = xml_with(
        "<cpu mode='custom' match='exact'><model>Haswell</model></cpu>",
        "<cpu mode='host-model'/>",
    )
    destination = dest()
    status, message = await status_of("cpu", xml=xml, destination=destination)
    assert status is Status.SUCCESS and "host-model" in message
    assert destination.compared == []


async def test_name_uuid_ignores_a_domain_found_by_id():
    xml = xml_with("<name>vm1</name>", "<name>7</name>")
    other = FakeDomain("web", "00000000-0000-4000-8000-00000000bbbb")
    status, _ = await status_of("name-uuid", xml=xml, destination=dest(domains={"7": other}))
    assert status is Status.SUCCESS

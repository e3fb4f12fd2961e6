"""gagent.host.reach: choose_route (pure, on live-XML strings) and open_domain_agent
against libvirt's test driver, with the real qemu-ga (fixture) behind a channel path."""

from __future__ import annotations

import socket

import pytest
import trio

from gagent.errors import AgentUnavailable, ConnectionLost, HostError, UsageError
from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.domxml import parse_domain
from gagent.host.libvirt_agent import LibvirtAgent
from gagent.host.managed import Manager, manager_of
from gagent.host.reach import AgentRoute, Transport, choose_route
from gagent.host.session import open_domain_agent
from gagent.host.virt import DEFAULT_URI, DomainNotFound, DomainState, open_hypervisor

TIMEOUT = 10
RUNNING = DomainState.RUNNING


def channel(
    name: str | None,
    *,
    kind: str = "unix",
    path: str | None = None,
    state: str | None = None,
    target_type: str = "virtio",
) -> str:
    source = f"<source mode='bind' path='{path}'/>" if path else ""
    attrs = f" type='{target_type}'" + (f" name='{name}'" if name else "")
    attrs += f" state='{state}'" if state else ""
    return f"<channel type='{kind}'>{source}<target{attrs}/></channel>"


def live(*channels: str) -> str:
    """A live domain XML (as `virsh dumpxml` of a running domain) with these channels."""
    return (
        "<domain type='kvm' id='7'><name>vm</name><devices>"
        "<controller type='virtio-serial' index='0'/>" + "".join(channels) + "</devices></domain>"
    )


OURS = channel(GAGENT_CHANNEL, path="/run/gagent/vm.sock", state="connected")
THEIRS = channel(LIBVIRT_AGENT_CHANNEL, path="/var/lib/libvirt/qemu/vm.agent", state="connected")


# ------------------------------------------------------------------ states


@pytest.mark.parametrize(
    "state",
    [DomainState.SHUTOFF, DomainState.NOSTATE, DomainState.SHUTDOWN, DomainState.CRASHED,
     DomainState.PMSUSPENDED],
)  # fmt: skip
def test_inactive_domain_cannot_answer(state):
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", state, "")
    assert f"domain vm is {state.value}" in str(info.value)
    assert info.value.hint == "start it first: virsh start vm"


def test_paused_domain_cannot_answer():
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", DomainState.PAUSED, live(OURS, THEIRS))
    assert "paused" in str(info.value)
    assert info.value.hint == "resume it first: virsh resume vm"


@pytest.mark.parametrize("state", [DomainState.RUNNING, DomainState.BLOCKED])
def test_running_and_blocked_domains_are_reachable(state):
    assert choose_route("vm", state, live(OURS)).transport is Transport.SOCKET


# ---------------------------------------------------------------- channels


def test_no_channels():
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, live())
    assert GAGENT_CHANNEL in str(info.value) and LIBVIRT_AGENT_CHANNEL in str(info.value)
    assert info.value.hint == "add one: gagent channel add vm"


def test_no_devices_at_all():
    with pytest.raises(AgentUnavailable):
        choose_route("vm", RUNNING, "<domain type='kvm'><name>vm</name></domain>")


def test_only_libvirt_channel_goes_through_libvirt():
    route = choose_route("vm", RUNNING, live(THEIRS))
    assert route.transport is Transport.LIBVIRT
    assert route.channel.name == LIBVIRT_AGENT_CHANNEL
    assert route.socket_path is None
    assert route.describe("vm") == f"domain vm via libvirt ({LIBVIRT_AGENT_CHANNEL})"


def test_ours_connected_goes_over_the_socket():
    route = choose_route("vm", RUNNING, live(THEIRS, OURS))
    assert route == AgentRoute(Transport.SOCKET, route.channel, "/run/gagent/vm.sock")
    assert route.channel.name == GAGENT_CHANNEL
    assert route.describe("vm") == "domain vm via /run/gagent/vm.sock"


def test_ours_without_state_is_tried():
    # Older libvirt (and the test driver) report no state: try the socket.
    route = choose_route("vm", RUNNING, live(channel(GAGENT_CHANNEL, path="/run/a.sock")))
    assert route.transport is Transport.SOCKET
    assert route.socket_path == "/run/a.sock"


@pytest.mark.parametrize("transport", [Transport.AUTO, Transport.SOCKET])
def test_ours_disconnected(transport):
    xml = live(channel(GAGENT_CHANNEL, path="/run/a.sock", state="disconnected"))
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, xml, transport=transport)
    assert "disconnected" in str(info.value)
    assert "gagent-guest check" in str(info.value)


def test_auto_falls_back_to_libvirt_when_ours_is_disconnected():
    xml = live(channel(GAGENT_CHANNEL, path="/run/a.sock", state="disconnected"), THEIRS)
    route = choose_route("vm", RUNNING, xml)
    assert route.transport is Transport.LIBVIRT


def test_explicit_libvirt_transport_ignores_ours():
    route = choose_route("vm", RUNNING, live(OURS, THEIRS), transport=Transport.LIBVIRT)
    assert route.transport is Transport.LIBVIRT


def test_explicit_libvirt_transport_without_libvirt_channel():
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, live(OURS), transport=Transport.LIBVIRT)
    assert LIBVIRT_AGENT_CHANNEL in str(info.value)


def test_explicit_libvirt_transport_hint_names_the_missing_channel():
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, live(OURS), transport=Transport.LIBVIRT)
    assert LIBVIRT_AGENT_CHANNEL in (info.value.hint or "")
    assert "--libvirt-managed" in (info.value.hint or "")


def test_explicit_socket_transport_without_ours():
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, live(THEIRS), transport=Transport.SOCKET)
    assert f"has no channel named {GAGENT_CHANNEL}" in str(info.value)
    assert info.value.hint == f"add one: gagent channel add vm --name {GAGENT_CHANNEL}"


def test_channel_without_path():
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, live(channel(GAGENT_CHANNEL, state="connected"), THEIRS))
    assert "not a unix socket with a path (type unix)" in str(info.value)
    assert "gagent channel remove vm" in str(info.value)


def test_channel_of_another_type():
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, live(channel(GAGENT_CHANNEL, kind="pty")))
    assert "(type pty)" in str(info.value)


def test_non_virtio_channel_with_our_name_is_not_ours():
    xml = live(channel(GAGENT_CHANNEL, path="/run/a.sock", target_type="xen"), THEIRS)
    assert choose_route("vm", RUNNING, xml).transport is Transport.LIBVIRT


def test_custom_channel_name():
    xml = live(OURS, channel("org.example.agent.1", path="/run/b.sock", state="connected"))
    route = choose_route("vm", RUNNING, xml, channel_name="org.example.agent.1")
    assert route.socket_path == "/run/b.sock"
    assert route.channel.name == "org.example.agent.1"


def test_libvirts_channel_is_not_a_socket_for_us():
    with pytest.raises(UsageError) as info:
        choose_route(
            "vm", RUNNING, live(THEIRS), transport=Transport.SOCKET,
            channel_name=LIBVIRT_AGENT_CHANNEL,
        )  # fmt: skip
    assert "--transport libvirt" in str(info.value)


def test_transport_values():
    assert [t.value for t in Transport] == ["auto", "socket", "libvirt"]
    assert Transport("libvirt") is Transport.LIBVIRT


# ------------------------------------------------------- managed domains

NOVA_XML = (
    "<domain type='kvm'><name>vm</name><metadata><nova:instance "
    "xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/></metadata></domain>"
)


class SessionAdvice:
    """Advice as the domain session builds it, for a domain a manager may own."""

    def __init__(self, manager: Manager | None):
        self.manager = manager

    def command(self, *words: str, options: tuple[str, ...] = ()) -> str:
        return " ".join(["gagent", *words, "vm", "-c", "qemu:///system", *options])

    def virsh(self, verb: str) -> str:
        return f"virsh -c qemu:///system {verb} vm"


NOVA = manager_of(parse_domain(NOVA_XML))
LIBVIRT_PING = "gagent agent vm -c qemu:///system --transport libvirt ping"
REFUSED = "OpenStack nova manages the domain, so gagent adds no channel to it"


def managed_hint(xml: str, transport: Transport = Transport.AUTO, manager=NOVA) -> str:
    with pytest.raises(AgentUnavailable) as info:
        choose_route("vm", RUNNING, xml, transport=transport, advice=SessionAdvice(manager))
    assert info.value.hint is not None
    return info.value.hint


@pytest.mark.parametrize("transport", [Transport.AUTO, Transport.SOCKET, Transport.LIBVIRT])
def test_managed_domain_without_libvirts_channel_is_told_the_managers_way(transport):
    assert NOVA is not None
    assert managed_hint(live(), transport) == f"{REFUSED}: {NOVA.advice}"


def test_managed_domain_with_libvirts_channel_is_told_transport_libvirt():
    assert managed_hint(live(THEIRS), Transport.SOCKET) == (
        f"{REFUSED}; reach its agent through libvirt ({LIBVIRT_AGENT_CHANNEL}): {LIBVIRT_PING}"
    )
    # a socket channel of ours without a path: no "recreate it" either
    broken = channel(GAGENT_CHANNEL, kind="pty", state="connected")
    assert managed_hint(live(broken, THEIRS), Transport.SOCKET).endswith(LIBVIRT_PING)


def test_managed_domain_whose_libvirt_channel_is_closed_names_qemu_ga_and_the_route():
    closed = channel(
        LIBVIRT_AGENT_CHANNEL, path="/var/lib/libvirt/qemu/vm.agent", state="disconnected"
    )
    hint = managed_hint(live(closed))
    assert hint == (
        f"{REFUSED}; its agent answers through libvirt once qemu-ga in the guest opens "
        f"{LIBVIRT_AGENT_CHANNEL} (closed now): {LIBVIRT_PING}"
    )


def test_unmanaged_domain_is_told_channel_add_as_before():
    assert managed_hint(live(), manager=None) == "add one: gagent channel add vm -c qemu:///system"
    assert managed_hint(live(THEIRS), Transport.SOCKET, manager=None) == (
        f"add one: gagent channel add vm -c qemu:///system --name {GAGENT_CHANNEL}"
    )


# ------------------------------------------------------ open_domain_agent


async def test_open_domain_agent_without_channels():
    with trio.fail_after(TIMEOUT), pytest.raises(AgentUnavailable) as info:
        async with open_domain_agent("test", uri=DEFAULT_URI):
            pytest.fail("no agent expected")
    assert "domain test has no agent channel" in str(info.value)
    assert info.value.hint == "add one: gagent channel add test -c test:///default"


async def test_open_domain_agent_unknown_domain():
    with trio.fail_after(TIMEOUT), pytest.raises(DomainNotFound):
        async with open_domain_agent("gagent-no-such-domain", uri=DEFAULT_URI):
            pytest.fail("no agent expected")


async def test_open_domain_agent_shut_off(make_domain):
    name = make_domain(channel(GAGENT_CHANNEL, path="/run/x.sock"), start=False)
    with trio.fail_after(TIMEOUT), pytest.raises(AgentUnavailable) as info:
        async with open_domain_agent(name, uri=DEFAULT_URI):
            pytest.fail("no agent expected")
    assert "shut off" in str(info.value)


async def test_open_domain_agent_over_the_channel_socket(qemu_ga, make_domain):
    """The test driver keeps the channel's source path: it leads to the real qemu-ga."""
    path = str(qemu_ga.socket_path)
    name = make_domain(channel(GAGENT_CHANNEL, path=path))
    with trio.fail_after(TIMEOUT):
        async with open_domain_agent(name, uri=DEFAULT_URI) as agent:
            assert agent.name == f"domain {name} via {path}"
            assert await agent.host_name() == socket.gethostname()
        # and by UUID, over an open hypervisor that stays open
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            uuid_ref = (await hv.lookup(name)).uuid
            async with open_domain_agent(uuid_ref, hypervisor=hv, transport="socket") as agent:
                await agent.ping()
            assert (await hv.lookup(name)).name == name  # not closed by open_domain_agent
        finally:
            await hv.close()


async def test_open_domain_agent_nobody_listening(tmp_path, make_domain):
    name = make_domain(channel(GAGENT_CHANNEL, path=str(tmp_path / "absent.sock")))
    with trio.fail_after(TIMEOUT), pytest.raises(AgentUnavailable):
        async with open_domain_agent(name, uri=DEFAULT_URI):
            pytest.fail("no agent expected")


async def test_open_domain_agent_libvirt_route_builds_a_libvirt_agent(make_domain):
    name = make_domain(channel(LIBVIRT_AGENT_CHANNEL, path="/run/unused.agent"))
    hv = await open_hypervisor(DEFAULT_URI)
    try:
        with trio.fail_after(TIMEOUT), pytest.raises(Exception) as info:
            async with open_domain_agent(name, hypervisor=hv, transport="libvirt"):
                pytest.fail("the test driver has no qemuAgentCommand")
        # it went through libvirt (whose test driver refuses), not a socket
        assert "virDomainQemuAgentCommand" in str(info.value)
        assert LibvirtAgent(await hv.lookup(name)).name == f"domain {name} (through libvirt)"
    finally:
        await hv.close()


async def test_open_domain_agent_libvirt_route_unsupported_driver_is_not_connection_lost(
    make_domain,
):
    name = make_domain(channel(LIBVIRT_AGENT_CHANNEL, path="/run/unused.agent"))
    with trio.fail_after(TIMEOUT), pytest.raises(Exception) as info:
        async with open_domain_agent(name, uri=DEFAULT_URI):
            pytest.fail("the test driver has no qemuAgentCommand")
    assert not isinstance(info.value, ConnectionLost)
    assert isinstance(info.value, AgentUnavailable | HostError)

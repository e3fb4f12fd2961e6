"""gagent.sync.open_domain_agent on libvirt's test driver: channel sockets pointing at the real
qemu-ga on this host, and the same errors as the async domain session."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
import trio

import gagent
import gagent.sync
import gagent.sync_freeze
from gagent.errors import AgentUnavailable

TEST_URI = "test:///default"


@pytest.fixture
def domain_on(qemu_ga):
    """Factory: a running test-driver domain whose channel XML is given (cleaned up)."""
    import libvirt

    conn = libvirt.open(TEST_URI)
    made = []

    def make(channels: str) -> str:
        name = f"gagent-sync-{uuid.uuid4().hex[:10]}"
        dom = conn.defineXML(
            f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
            f"<os><type>hvm</type></os><devices>{channels}</devices></domain>"
        )
        dom.create()
        made.append(dom)
        return name

    yield make
    for dom in made:
        dom.destroy()
        dom.undefine()
    conn.close()


def gagent_channel(path: Path) -> str:
    return (
        f"<channel type='unix'><source mode='bind' path='{path}'/>"
        "<target type='virtio' name='org.gagent.agent.0'/></channel>"
    )


@pytest.fixture
def hung_listener(tmp_path: Path):
    """A unix socket that accepts and never answers."""
    path = tmp_path / "hung.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    yield path
    listener.close()


@pytest.mark.qemu_ga
def test_a_domain_by_name_over_its_channel(qemu_ga, domain_on) -> None:
    name = domain_on(gagent_channel(qemu_ga.socket_path))
    with gagent.sync.open_domain_agent(name, uri=TEST_URI, timeout=10) as agent:
        assert agent.host_name() == socket.gethostname()
        assert agent.commands.target.thaw == f"gagent thaw {name} -c {TEST_URI}"
        assert agent.name == f"domain {name} via {qemu_ga.socket_path}"


@pytest.mark.qemu_ga
@pytest.mark.parametrize("transport", ["auto", "libvirt"])
def test_domain_errors_are_the_async_ones(qemu_ga, domain_on, transport: str) -> None:
    """No channel for the route: the same error, word for word, as the domain session's."""
    from gagent.host.session import open_domain_agent

    name = domain_on("")

    async def async_error() -> str:
        with pytest.raises(AgentUnavailable) as caught:
            async with open_domain_agent(name, uri=TEST_URI, transport=transport):
                pass
        return str(caught.value)

    with pytest.raises(AgentUnavailable) as caught:
        with gagent.sync.open_domain_agent(name, uri=TEST_URI, transport=transport):
            pass
    assert str(caught.value) == trio.run(async_error)


def test_an_unknown_domain_is_domain_not_found() -> None:
    from gagent.host.virt import DomainNotFound

    with pytest.raises(DomainNotFound, match="no domain 'gagent-none"):
        with gagent.sync.open_domain_agent("gagent-none", uri=TEST_URI):
            pass


@pytest.mark.qemu_ga
def test_a_silent_channel_of_unknown_state_is_the_async_error(domain_on, hung_listener) -> None:
    """libvirt knows no state of the channel and nothing answers: AgentUnavailable after the
    session's limit, word for word as the async domain session says it."""
    from gagent.host.session import open_domain_agent

    name = domain_on(gagent_channel(hung_listener))

    async def async_error() -> str:
        with pytest.raises(AgentUnavailable) as caught:
            async with open_domain_agent(name, uri=TEST_URI):
                pass
        return str(caught.value)

    with pytest.raises(AgentUnavailable) as caught:
        with gagent.sync.open_domain_agent(name, uri=TEST_URI, timeout=30):
            pass
    assert "libvirt reports no state for it yet" in str(caught.value)
    assert str(caught.value) == trio.run(async_error)


def test_a_libvirtd_that_never_answers_is_agent_timeout(hung_listener: Path) -> None:
    uri = f"qemu+unix:///system?socket={hung_listener}"
    with pytest.raises(gagent.sync.AgentTimeout, match=r"libvirt did not answer within 0.5s"):
        with gagent.sync.open_domain_agent("vm1", uri=uri, timeout=0.5):
            pass


def test_advice_is_the_domain_sessions_own() -> None:
    """A stopped domain whose name reads as an ID: the advice names it by UUID, as the
    async domain session does (the sync path builds no advice of its own)."""
    import libvirt

    from gagent.host.session import open_domain_agent

    conn = libvirt.open(TEST_URI)
    name = str(900000 + uuid.uuid4().int % 99999)
    dom = conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    try:

        async def async_error() -> str:
            with pytest.raises(AgentUnavailable) as caught:
                async with open_domain_agent(dom.UUIDString(), uri=TEST_URI):
                    pass
            return str(caught.value)

        with pytest.raises(AgentUnavailable) as caught:
            with gagent.sync.open_domain_agent(dom.UUIDString(), uri=TEST_URI):
                pass
        assert str(caught.value) == trio.run(async_error)
        assert f"start {dom.UUIDString()}" in str(caught.value)
    finally:
        dom.undefine()
        conn.close()

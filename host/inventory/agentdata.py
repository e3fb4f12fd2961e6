"""What the inventory asks a guest's agent, and how it reaches it.

The route is decided from the live XML the scan already has (no libvirt call):
a domain without an agent channel fails at once, without a round trip.  Only
domains with a channel go through :func:`~gagent.host.session.open_domain_agent`
(gagent's own socket first, else libvirt's ``org.qemu.guest_agent.0``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from gagent.commands import AgentCommands
from gagent.errors import AgentError, CommandUnavailable

from ..channel_names import GAGENT_CHANNEL
from ..reach import choose_route
from ..session import open_domain_agent
from ..virt import DomainRecord, Hypervisor
from .model import AgentData

__all__ = ["check_route", "gather_agent_data", "open_guest_agent"]

T = TypeVar("T")


def check_route(record: DomainRecord, channel_name: str = GAGENT_CHANNEL) -> None:
    """Raise AgentUnavailable, without any I/O, when the domain has no way to its agent.

    The scan calls it before spending a task on the domain: most domains of a
    large inventory have no channel at all, and the substring test spares
    parsing their XML a second time (no ``<channel`` means no channel).
    """
    xml = record.xml if "<channel" in record.xml else "<domain/>"
    choose_route(record.domain.name, record.state, xml, channel_name=channel_name)


@asynccontextmanager
async def open_guest_agent(
    hv: Hypervisor, record: DomainRecord, channel_name: str = GAGENT_CHANNEL
) -> AsyncIterator[AgentCommands]:
    """The agent of a scanned domain, over the connection the scan already holds."""
    check_route(record, channel_name)
    async with open_domain_agent(
        record.domain.uuid, hypervisor=hv, channel_name=channel_name
    ) as agent:
        yield agent


async def gather_agent_data(agent: AgentCommands) -> AgentData:
    """Version, OS, hostname, addresses, filesystems and users, as far as the agent offers.

    guest-info must answer (else the error propagates); every other command may
    be missing or disabled in the guest, which leaves its part None and says so
    in ``missing``.
    """
    missing: list[str] = []

    async def part(command: str, call: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await call()
        except (CommandUnavailable, AgentError) as exc:
            missing.append(f"{command}: {exc}")
            return None

    info = await agent.info()
    osinfo = await part("guest-get-osinfo", agent.osinfo)
    hostname = await part("guest-get-host-name", agent.host_name)
    interfaces = await part("guest-network-get-interfaces", agent.network_interfaces)
    filesystems = await part("guest-get-fsinfo", agent.fsinfo)
    users = await part("guest-get-users", agent.users)
    return AgentData(
        version=info.version,
        os=None if osinfo is None else (osinfo.pretty_name or osinfo.name),
        kernel=None if osinfo is None else osinfo.kernel_release,
        hostname=hostname,
        interfaces=None if interfaces is None else [_interface(i) for i in interfaces],
        filesystems=None if filesystems is None else [_filesystem(f) for f in filesystems],
        users=None
        if users is None
        else [{"user": u.user, "domain": u.domain, "login_time": u.login_time} for u in users],
        missing=missing,
    )


def _interface(iface: Any) -> dict[str, Any]:
    return {
        "name": iface.name,
        "mac": iface.hardware_address,
        "addresses": [f"{a.address}/{a.prefix}" for a in iface.ip_addresses],
    }


def _filesystem(fs: Any) -> dict[str, Any]:
    return {
        "mountpoint": fs.mountpoint,
        "type": fs.type,
        "used_bytes": fs.used_bytes,
        "total_bytes": fs.total_bytes,
    }

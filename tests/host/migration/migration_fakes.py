"""Fake connection objects with the small async interface of gagent.host.virt.

Every fact is an attribute a test may change; a value that is an exception
instance is raised instead of returned (e.g. ``Unsupported(...)``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from gagent.errors import AgentUnavailable
from gagent.fs_types import FsfreezeStatus
from gagent.host.migration import MigrationContext, MigrationOptions
from gagent.host.virt import (
    CpuCompatibility,
    DomainNotFound,
    DomainState,
    JobProgress,
    NetworkInfo,
    Unsupported,
)

CAPS = """<capabilities><host/>
  <guest><os_type>hvm</os_type>
    <arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>
  <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/></arch></guest>
</capabilities>"""

DOMAIN_XML = """<domain type='kvm'>
  <name>vm1</name>
  <uuid>00000000-0000-4000-8000-0000000000f1</uuid>
  <memory unit='MiB'>2048</memory>
  <currentMemory unit='MiB'>1024</currentMemory>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'><model>Haswell</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><source file='/shared/vm1.qcow2'/><target dev='vda'/></disk>
    <interface type='network'><source network='default'/></interface>
    <channel type='unix'>
      <source mode='bind' path='/run/vm1.sock'/>
      <target type='virtio' name='org.gagent.agent.0' state='connected'/>
    </channel>
  </devices>
</domain>"""

UNSUPPORTED = Unsupported("this function is not supported by the connection driver", code=3)


def _give(value: Any) -> Any:
    if isinstance(value, BaseException):
        raise value
    return value


@dataclass
class FakeHypervisor:
    uri: str = "fake:///source"
    libvirt: int = 9_000_000
    hv_type: str = "QEMU"
    hv_version: int = 7_002_000
    caps: str = CAPS
    free: Any = 64 << 30
    cpu_answer: Any = CpuCompatibility.IDENTICAL
    nets: list[NetworkInfo] = field(
        default_factory=lambda: [NetworkInfo("default", True, "virbr0")]
    )
    ifaces: Any = field(default_factory=lambda: ["br0", "eth0"])
    volumes: set[str] = field(default_factory=lambda: {"/shared/vm1.qcow2"})
    pool_volumes: set[tuple[str, str]] = field(default_factory=set)
    domains: dict[str, FakeDomain] = field(default_factory=dict)  # name or UUID -> domain
    compared: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    closed: bool = False

    async def _pause(self) -> None:
        if self.delay:
            await trio.sleep(self.delay)

    async def libvirt_version(self) -> int:
        await self._pause()
        return _give(self.libvirt)

    async def hypervisor_type(self) -> str:
        return _give(self.hv_type)

    async def hypervisor_version(self) -> int:
        return _give(self.hv_version)

    async def capabilities(self) -> str:
        return _give(self.caps)

    async def free_memory(self) -> int:
        return _give(self.free)

    async def compare_cpu(self, cpu_xml: str, **kwargs: Any) -> CpuCompatibility:
        self.compared.append({"xml": cpu_xml, **kwargs})
        return _give(self.cpu_answer)

    async def networks(self) -> list[NetworkInfo]:
        return _give(self.nets)

    async def interface_names(self) -> list[str]:
        return _give(self.ifaces)

    async def volume_path_exists(self, path: str) -> bool:
        return path in self.volumes

    async def pool_volume_exists(self, pool: str, volume: str) -> bool:
        return (pool, volume) in self.pool_volumes

    async def lookup(self, ref: str) -> FakeDomain:
        if ref in self.domains:
            return self.domains[ref]
        raise DomainNotFound(f"no domain {ref!r} on {self.uri}")

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeDomain:
    name: str = "vm1"
    uuid: str = "00000000-0000-4000-8000-0000000000f1"
    snapshots: Any = field(default_factory=list)
    migrations: list[dict[str, Any]] = field(default_factory=list)
    migrate_error: BaseException | None = None
    migrate_seconds: float = 0.0
    progress: list[JobProgress] = field(default_factory=list)
    aborted: int = 0

    async def snapshot_names(self) -> list[str]:
        return _give(self.snapshots)

    async def job_progress(self) -> JobProgress:
        if not self.progress:
            raise UNSUPPORTED
        return self.progress.pop(0) if len(self.progress) > 1 else self.progress[0]

    async def abort_job(self) -> None:
        self.aborted += 1

    async def migrate(self, destination: Any, *, flags: int, uri: str | None = None) -> Any:
        self.migrations.append({"destination": destination.uri, "flags": flags, "uri": uri})
        await trio.sleep(self.migrate_seconds)
        if self.migrate_error is not None:
            raise self.migrate_error
        return FakeDomain(self.name, self.uuid)


class FakeAgent:
    """What the agent probe uses of AgentCommands."""

    def __init__(self, freeze: Any = FsfreezeStatus.THAWED, *, hang: bool = False):
        self.freeze = freeze
        self.hang = hang
        self.name = "fake agent"
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        if self.hang:
            await trio.sleep_forever()

    async def fsfreeze_status(self) -> FsfreezeStatus:
        return _give(self.freeze)


def agent_opener(agent: FakeAgent | BaseException):
    @asynccontextmanager
    async def open_agent(_ctx: MigrationContext):
        if isinstance(agent, BaseException):
            raise agent
        yield agent

    return open_agent


def unreachable(reason: str = "nothing listening on /run/vm1.sock") -> Any:
    return agent_opener(AgentUnavailable(reason))


def make_context(
    *,
    xml: str = DOMAIN_XML,
    state: DomainState = DomainState.RUNNING,
    source: FakeHypervisor | None = None,
    destination: FakeHypervisor | None = None,
    domain: FakeDomain | None = None,
    options: MigrationOptions | None = None,
    agent: Any = None,
    agent_timeout: float = 5.0,
    channel_name: str = "org.gagent.agent.0",
) -> MigrationContext:
    ctx = MigrationContext(
        source=source or FakeHypervisor(),  # type: ignore[arg-type]
        destination=destination or FakeHypervisor(uri="fake:///destination"),  # type: ignore[arg-type]
        domain=domain or FakeDomain(),  # type: ignore[arg-type]
        state=state,
        xml=xml,
        options=options or MigrationOptions(),
        agent_timeout=agent_timeout,
        channel_name=channel_name,
    )
    ctx.open_agent = agent if agent is not None else agent_opener(FakeAgent())
    return ctx

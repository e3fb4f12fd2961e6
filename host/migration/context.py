"""What every check receives: both connections, the domain, its parsed XML, the options.

Checks that need the same expensive fact share it through
:meth:`MigrationContext.memo`: the guest-agent and frozen-filesystems checks
both use one :meth:`~MigrationContext.agent_probe`, so the guest's agent is
asked once per run (a unix-socket channel serves one client at a time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from gagent.commands import AgentCommands
from gagent.errors import GagentError

from ..channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL, list_channels
from ..domxml import DomainFacts, parse_domain
from ..virt import Domain, DomainState, Hypervisor

__all__ = ["AgentProbe", "MigrationContext", "MigrationOptions", "gather_context"]

T = TypeVar("T")

#: Opens the domain's agent for the probe (tests pass a fake).
AgentOpener = Callable[["MigrationContext"], AbstractAsyncContextManager[AgentCommands]]


@dataclass(frozen=True)
class MigrationOptions:
    """How the migration is meant to run (checks adapt: copy_storage makes local disks fine)."""

    live: bool = False
    persistent: bool = False
    undefine_source: bool = False
    copy_storage: bool = False


@dataclass(frozen=True)
class AgentProbe:
    """What asking the guest's agent once found out."""

    running: bool
    channels: list[str]  # agent channels the domain has (ours and/or libvirt's)
    answered: bool = False
    route: str | None = None
    reason: str | None = None  # why it did not answer
    freeze: str | None = None  # 'frozen' / 'thawed' when the agent said so
    freeze_error: str | None = None


def _default_opener(ctx: MigrationContext) -> AbstractAsyncContextManager[AgentCommands]:
    from ..session import open_domain_agent

    return open_domain_agent(ctx.domain.name, hypervisor=ctx.source, channel_name=ctx.channel_name)


@dataclass
class MigrationContext:
    source: Hypervisor
    destination: Hypervisor
    domain: Domain
    state: DomainState
    xml: str  # live XML when running, else the inactive definition
    options: MigrationOptions = MigrationOptions()
    agent_timeout: float = 5.0
    open_agent: AgentOpener = _default_opener
    #: gagent's channel in the domain (the agent probe also looks for libvirt's)
    channel_name: str = GAGENT_CHANNEL
    facts: DomainFacts = field(init=False)
    _memo: dict[str, _Memo] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.facts = parse_domain(self.xml)

    async def memo(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """``compute()`` once per run, shared by every check that asks for ``key``.

        If the task computing it is cancelled (its check timed out), the next
        caller computes it again rather than waiting forever.
        """
        while True:
            entry = self._memo.get(key)
            if entry is None:
                entry = self._memo[key] = _Memo()
                try:
                    entry.value = await compute()
                except BaseException as exc:
                    if isinstance(exc, trio.Cancelled):
                        del self._memo[key]
                        entry.retry = True
                    else:
                        entry.error = exc
                    raise
                finally:
                    entry.done.set()
            await entry.done.wait()
            if entry.retry:
                continue
            if entry.error is not None:
                raise entry.error
            return entry.value

    async def agent_probe(self) -> AgentProbe:
        return await self.memo("agent-probe", self._probe_agent)

    async def _probe_agent(self) -> AgentProbe:
        running = self.state.is_active and self.state is not DomainState.PAUSED
        channels = [
            c.name
            for c in list_channels(self.xml)
            if c.target_type == "virtio" and c.name in (self.channel_name, LIBVIRT_AGENT_CHANNEL)
        ]
        if not running or not channels:
            return AgentProbe(running, channels)
        freeze = freeze_error = None
        try:
            with trio.fail_after(self.agent_timeout):
                async with self.open_agent(self) as agent:
                    await agent.ping()
                    route = getattr(agent, "name", None)
                    try:
                        freeze = (await agent.fsfreeze_status()).value
                    except GagentError as exc:
                        freeze_error = str(exc)
        except trio.TooSlowError:
            reason = f"no answer within {self.agent_timeout:g}s"
            return AgentProbe(running, channels, reason=reason)
        except GagentError as exc:
            return AgentProbe(running, channels, reason=str(exc))
        return AgentProbe(running, channels, True, route, None, freeze, freeze_error)

    def to_json(self) -> dict[str, Any]:
        """The context external checks get on stdin."""
        return {
            "version": 1,
            "domain": {
                "name": self.facts.name,
                "uuid": self.facts.uuid,
                "state": self.state.value,
                "xml": self.xml,
            },
            "source": {"uri": self.source.uri},
            "destination": {"uri": self.destination.uri},
            "options": {
                "live": self.options.live,
                "persistent": self.options.persistent,
                "undefine_source": self.options.undefine_source,
                "copy_storage": self.options.copy_storage,
            },
        }


@dataclass
class _Memo:
    done: trio.Event = field(default_factory=trio.Event)
    value: Any = None
    error: BaseException | None = None
    retry: bool = False


async def gather_context(
    source: Hypervisor,
    destination: Hypervisor,
    ref: str,
    options: MigrationOptions = MigrationOptions(),
    **kwargs: Any,
) -> MigrationContext:
    """Look the domain up on ``source`` and read what the checks need."""
    domain = await source.lookup(ref)
    state = await domain.state()
    xml = await domain.xml(inactive=not state.is_active)
    return MigrationContext(source, destination, domain, state, xml, options, **kwargs)

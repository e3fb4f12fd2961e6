"""The synchronous API: the same typed commands, for scripts without an event loop.

::

    import gagent.sync

    with gagent.sync.open_agent("/run/vm1-agent.sock", timeout=5) as agent:
        print(agent.osinfo().pretty_name)

    with gagent.sync.open_domain_agent("vm1", uri="qemu:///system") as agent:
        print(agent.host_name())

There is one command layer: :class:`~gagent.commands.AgentCommands`, whose
async methods only await ``self.execute``.  Here they run over
:class:`BlockingAgent`, whose ``execute`` does blocking socket I/O through the
same sans-IO codec as the trio client (and the same resync loop,
:mod:`gagent.exchange`); :func:`run_blocking` drives such a coroutine to its
end without an event loop, since nothing in it ever suspends.  So every command
returns the same dataclasses and raises the same errors as the async API.

Deadlines: a sync caller has no cancel scope, so every call of a
:class:`SyncAgent` method gets ``timeout`` seconds (the argument of
``open_agent``; :attr:`SyncAgent.timeout` changes it), spent on the socket's
reads and writes; when it passes, :class:`AgentTimeout` is raised and the next
call resynchronises first (a late reply is never taken for the next one's).

This module imports no trio: ``open_agent`` on a socket runs on the standard
library alone.  :func:`frozen` (which builds on gagent.freeze's errors) and
:func:`open_domain_agent` (libvirt) import more, when used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from .errors import AgentTarget
from .protocol import DEFAULT_MAX_REPLY_SIZE

# The blocking agent's home is gagent.sync_agent; every name this module has
# always offered is importable from here still (the three outside __all__ too).
from .sync_agent import (
    DEFAULT_TIMEOUT,
    AgentTimeout,
    BlockingAgent,
    SyncAgent,
    run_blocking,
)
from .sync_agent import NO_REPLY_GRACE as NO_REPLY_GRACE
from .sync_agent import StillSuspended as StillSuspended
from .sync_agent import connect_unix as connect_unix

if TYPE_CHECKING:
    from .freeze import FreezeRecord

__all__ = [
    "DEFAULT_TIMEOUT",
    "AgentTimeout",
    "BlockingAgent",
    "SyncAgent",
    "frozen",
    "open_agent",
    "open_domain_agent",
    "run_blocking",
]


@contextmanager
def open_agent(
    path: str | os.PathLike[str],
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    sync: bool = True,
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
) -> Iterator[SyncAgent]:
    """Connect to an agent's unix socket, sync, and close it when the block ends.

    ``timeout`` bounds the connect, the sync and then each call (None: none).
    """
    sock = connect_unix(path, timeout or None)
    transport = BlockingAgent(sock, max_reply_size=max_reply_size, name=os.fspath(path))
    transport.target = AgentTarget.for_socket(path)
    transport.path = os.fspath(path)
    agent = SyncAgent(transport, timeout)
    try:
        if sync:
            agent.sync()
        yield agent
    finally:
        transport.close()


@contextmanager
def open_domain_agent(
    ref: str,
    *,
    uri: str | None = None,
    transport: str = "auto",
    channel_name: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Iterator[SyncAgent]:
    """The typed commands for a libvirt domain (name, UUID or ID), blocking.

    The route is chosen as ``gagent agent DOMAIN`` chooses it (``transport``:
    auto, socket or libvirt); ``timeout`` bounds libvirt's calls and then each
    command.  Needs libvirt-python (gagent[host]).
    """
    # gagent.host is host/ mapped in by the installer: a type checker of an editable
    # install does not find it (of a wheel it does, hence unused-ignore).
    from gagent.host.sync_domain import (  # type: ignore[import-not-found, unused-ignore]
        open_domain_agent as open_it,
    )

    with open_it(
        ref, uri=uri, transport=transport, channel_name=channel_name, timeout=timeout
    ) as agent:
        yield agent


# ------------------------------------------------------------------ freezing


def frozen(
    agent: SyncAgent,
    mountpoints: Iterable[str] | None = None,
    *,
    freeze_timeout: float = 30.0,
    thaw_timeout: float = 15.0,
    allow_nothing_frozen: bool = False,
    domain: str | None = None,
) -> AbstractContextManager[FreezeRecord]:
    """Freeze, run the block, always thaw and confirm: see :func:`gagent.sync_freeze.frozen`."""
    from .sync_freeze import frozen as frozen_blocking  # builds on gagent.freeze (trio)

    return frozen_blocking(
        agent,
        mountpoints,
        freeze_timeout=freeze_timeout,
        thaw_timeout=thaw_timeout,
        allow_nothing_frozen=allow_nothing_frozen,
        domain=domain,
    )

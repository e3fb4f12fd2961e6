"""gagent: guest-agent channel toolkit for KVM/libvirt hosts.

The core (this package) speaks the QEMU guest agent protocol; it imports
neither libvirt nor lxml.  ``gagent.host`` adds libvirt, ``gagent.guest`` is the
guest-side helper.

The trio client is imported lazily: ``gagent.guest`` lives inside this package
and runs on guests that have no trio, and ``gagent.protocol``/``gagent.errors``
are sans-IO.

Public API (the names below load on first use; ``dir(gagent)`` lists them):

* ``open_agent(path)`` -> :class:`Agent`, the typed commands over a unix socket
  (``async with``); ``open_agent_over(stream)``, ``connect_unix(path)``;
* ``frozen(agent)``: an ``async with`` block during which the guest's filesystems
  are frozen, always thawed after (shielded, bounded, confirmed);
* ``run_program(agent, argv)`` -> :class:`ProgramResult`;
  ``copy_to_guest``/``copy_from_guest`` for files;
* :mod:`gagent.sync`: the same commands for blocking callers
  (``with gagent.sync.open_agent(path) as agent: agent.osinfo()``);
* :mod:`gagent.host`: libvirt domains (``open_domain_agent``, ``open_domain``...);
* the error tree, rooted at :class:`GagentError` (:mod:`gagent.errors`).
"""

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    AgentError,
    AgentUnavailable,
    CommandDisabled,
    CommandNotFound,
    CommandUnavailable,
    ConnectionLost,
    FrozenStateViolation,
    GagentError,
    GuestFrozen,
    ProtocolError,
    ReplyTooLarge,
)

# A library's logs are its user's to show: without this, Python's last-resort handler
# prints gagent's warnings on stderr next to the one-line error that says the same.
logging.getLogger("gagent").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .client import Agent, connect_unix, open_agent, open_agent_over
    from .freeze import frozen
    from .programs import ProgramResult, run_program
    from .transfer import copy_from_guest, copy_to_guest

__version__ = "0.1.0"

#: The public names that import trio (or more), loaded on first use: module -> names.
_LAZY = {
    "client": ("Agent", "connect_unix", "open_agent", "open_agent_over"),
    "freeze": ("frozen",),
    "programs": ("ProgramResult", "run_program"),
    "transfer": ("copy_from_guest", "copy_to_guest"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "Agent",
    "AgentError",
    "AgentUnavailable",
    "CommandDisabled",
    "CommandNotFound",
    "CommandUnavailable",
    "ConnectionLost",
    "FrozenStateViolation",
    "GagentError",
    "GuestFrozen",
    "ProgramResult",
    "ProtocolError",
    "ReplyTooLarge",
    "connect_unix",
    "copy_from_guest",
    "copy_to_guest",
    "frozen",
    "open_agent",
    "open_agent_over",
    "run_program",
]


# Here, not in a module of its own: the guest helper imports this package and nothing
# of gagent's but itself and gagent.errors.
def _lazy_exports(
    package: str, where: Mapping[str, str], namespace: dict[str, Any], extra: str | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``where`` maps each lazy public
    name to the submodule that defines it; ``namespace`` is the package's globals().

    A name whose module needs a missing optional part raises ModuleNotFoundError naming
    the extra that installs it (gagent.extras).  While ``extra`` (the one the lazy names
    need) is not installed, dir() leaves them out: help() then renders the package (its
    docstring names the API) instead of failing on the first import.
    """

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            imported = importlib.import_module(f"{package}.{module}")
        except ModuleNotFoundError as exc:
            from .extras import missing_extra, needs_extra  # only when one is missing

            missing = missing_extra(exc)
            if missing is None:
                raise
            raise ModuleNotFoundError(
                needs_extra(f"{package}.{name}", *missing), name=missing[0]
            ) from exc
        return getattr(imported, name)

    def dir_() -> list[str]:
        if extra is not None:
            from .extras import extra_installed

            if not extra_installed(extra):
                return sorted(namespace)
        return sorted(set(namespace) | set(where))

    return getattr_, dir_


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY_NAMES, globals())

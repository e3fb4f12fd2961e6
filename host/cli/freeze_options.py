"""The options that ``gagent fsfreeze``, ``snapshot`` and ``thaw`` share, and :func:`run_on_domain`.

Its own module so that freeze.py (the groups) and the modules whose commands it
adds to them, preflight.py (``fsfreeze check``) and group_snapshot.py
(``snapshot group``), all build on it and none on another's groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from gagent.freeze import DEFAULT_FREEZE_TIMEOUT, DEFAULT_THAW_TIMEOUT

from .common import run_command
from .options import Seconds
from .options import connect_option as shared_connect_option
from .options import json_option as shared_json_option

__all__ = [
    "allow_nothing_option", "connect_option", "freeze_timeout_option", "json_option",
    "mountpoint_option", "run_on_domain", "thaw_timeout_option", "timeout_option",
    "transport_option",
]  # fmt: skip

T = TypeVar("T")


connect_option = shared_connect_option()
json_option = shared_json_option()
transport_option = click.option(
    "--transport",
    type=click.Choice(["auto", "socket", "libvirt"]),
    default="auto",
    show_default=True,
    help="gagent's channel (socket) or libvirt's org.qemu.guest_agent.0.",
)


def timeout_option(default: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--timeout",
        type=Seconds(min=0),
        default=default,
        show_default=True,
        help="Deadline for the whole command in seconds, libvirt included (0: none); "
        "a thaw that must follow a freeze still runs, within --thaw-timeout.",
    )


freeze_timeout_option = click.option(
    "--freeze-timeout",
    type=Seconds(min=0.1),
    default=DEFAULT_FREEZE_TIMEOUT,
    show_default=True,
    help="Seconds for the freeze reply (the guest is thawed if it does not come).",
)
thaw_timeout_option = click.option(
    "--thaw-timeout",
    type=Seconds(min=0.1),
    default=DEFAULT_THAW_TIMEOUT,
    show_default=True,
    help="Seconds for the thaw and its confirmation (up to three attempts).",
)
mountpoint_option = click.option(
    "--mountpoint", "mountpoints", multiple=True, help="Freeze only these (repeat)."
)
allow_nothing_option = click.option(
    "--allow-nothing-frozen", is_flag=True, help="A freeze of 0 filesystems is not an error."
)


def run_on_domain(func: Callable[[], Awaitable[T]], target: str, timeout: float | None = None) -> T:
    """``func`` under :func:`~gagent.host.cli.common.run_command`, within ``timeout``,
    its errors naming ``domain TARGET``."""
    return run_command(func, seconds=timeout, target=f"domain {target}")

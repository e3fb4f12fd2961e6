"""``gagent channel probe``: time round trips through a channel (the guest answers).

Defined here, added to the ``channel`` group by domain.py (``channel_group.add_command``).
"""

from __future__ import annotations

from typing import Any

import click

from .common import Output, run_command
from .completion import domain_argument
from .domain_options import DEFAULT_TIMEOUT, connect_option, json_option
from .options import Seconds

__all__ = ["channel_probe"]


@click.command("probe")
@domain_argument(required=False)
@click.option(
    "--name",
    default=None,
    help="Virtio port name (default org.gagent.agent.0); no agent may hold it in the guest.",
)
@click.option(
    "--socket",
    "socket_path",
    default=None,
    metavar="PATH",
    help="Probe this unix socket directly (no libvirt; e.g. a serial port's backend).",
)
@click.option("--count", type=click.IntRange(1, 10000), default=3, show_default=True)
@click.option(
    "--wait",
    type=Seconds(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the guest to answer.",
)
@connect_option
@click.option(
    "--timeout",
    type=Seconds(min=0),
    default=None,
    help="Deadline for the whole command, libvirt included (default: --wait + 30 s; 0: none).",
)
@json_option
def channel_probe(
    domain: str | None,
    name: str | None,
    socket_path: str | None,
    count: int,
    wait: float,
    connect: str | None,
    timeout: float | None,
    as_json: bool,
) -> int:
    """Send probes through DOMAIN's channel and print the round-trip times.

    In the guest, run 'gagent-guest probe --port NAME' on the same port: it
    answers (the port must be free of agents). Exit 3 when nothing answers.
    """
    from gagent.host.channel import GAGENT_CHANNEL
    from gagent.host.probe import probe_domain, probe_socket

    if not domain and not socket_path:
        raise click.UsageError("give DOMAIN, or --socket PATH")
    port = name or GAGENT_CHANNEL

    def say(message: str) -> None:
        click.echo(message, err=as_json)

    async def run() -> Any:
        if socket_path:
            return await probe_socket(socket_path, count=count, wait=wait, name=port, on_event=say)
        assert domain is not None
        return await probe_domain(
            domain, name=port, uri=connect, count=count, wait=wait, on_event=say
        )

    seconds = wait + DEFAULT_TIMEOUT + count if timeout is None else timeout
    result = run_command(run, seconds=seconds, target=socket_path or f"domain {domain}")
    Output(as_json).emit(result.as_dict(), lambda _value: result.summary())
    return 0

"""``gagent agent``: one guest-agent command per invocation."""

from __future__ import annotations

import json
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from gagent.errors import UsageError
from gagent.host.channel_names import GAGENT_CHANNEL

from .addressing import DomainFirstGroup
from .common import CommandTimeout, Output, parse_call, run_command, stop_signals_raise
from .completion import complete_domains
from .fanout import fan_out_options, parse_domains
from .options import Seconds, connect_option, json_option, log_traffic
from .views import VIEWS

if TYPE_CHECKING:
    from gagent.commands import AgentCommands

# The trio client, programs, copies and freezes are imported by the commands that
# use them: the simple commands on --socket run on the blocking client alone.

DEFAULT_TIMEOUT = 10.0
#: Copies and programs legitimately take long; they get a longer default.
LONG_TIMEOUT = 300.0


@dataclass
class AgentOptions:
    socket: str | None
    timeout: float | None
    output: Output
    domain: str | None = None
    connect: str | None = None
    transport: str = "auto"
    channel: str = GAGENT_CHANNEL
    #: --domains A,B / --all: many domains, one line each (see gagent.host.cli.fanout)
    domains: list[str] | None = None
    all_running: bool = False
    concurrency: int = 16

    #: the thaw command to advise, once the target is open (built from the session)
    retry: str | None = None

    @property
    def target(self) -> str:
        return f"domain {self.domain}" if self.domain else (self.socket or "?")

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AgentCommands]:
        if self.socket and self.domain:
            raise UsageError("give either DOMAIN or --socket PATH, not both")
        if self.socket:
            self.retry = shlex.join(
                ["gagent", "agent", "--socket", self.socket, "fsfreeze", "thaw"]
            )
            from gagent.client import open_agent

            async with open_agent(self.socket) as agent:
                log_traffic(agent, self.target)
                yield agent
        elif self.domain:
            from gagent.host.session import open_domain  # needs libvirt: import on use

            async with open_domain(self.domain, uri=self.connect) as session:
                self.retry = session.thaw_command(self.channel)
                async with session.agent(self.transport, self.channel) as agent:
                    log_traffic(agent, self.target)
                    yield agent
        else:
            raise UsageError("say which agent to talk to: DOMAIN or --socket PATH")

    def run(
        self,
        func: Callable[[AgentCommands], Awaitable[Any]],
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        view: Callable[[Any], str] | None = None,
        blocking: bool = False,
    ) -> Any:
        """``func`` on the agent, under the command's deadline and stop signals.

        ``blocking``: ``func`` only awaits the agent's commands, so the blocking
        client (gagent.sync) serves it, on --socket or DOMAIN, and trio is never
        imported.
        """
        if self.domains is not None or self.all_running:
            raise click.exceptions.Exit(self._run_many(func, default_timeout, view))
        if blocking and bool(self.socket) != bool(self.domain):
            return self._run_blocking(
                func, default_timeout if self.timeout is None else self.timeout
            )

        async def with_agent() -> Any:
            async with self.open() as agent:
                return await func(agent)

        timeout = default_timeout if self.timeout is None else self.timeout
        return run_command(with_agent, seconds=timeout, target=self.target)

    def _run_blocking(
        self, func: Callable[[AgentCommands], Awaitable[Any]], seconds: float | None
    ) -> Any:
        """``func`` over gagent.sync's blocking client, ``seconds`` in all: on --socket,
        or on DOMAIN through the blocking domain route (gagent.host.sync_domain: the
        domain session's own route and advice, libvirt's calls bounded by threads).
        Neither imports trio, which alone costs more than the whole call.

        A stop signal raises :class:`~.common.Interrupted` where the call is
        (the socket closes on the way out; nothing here froze anything).
        """
        import time

        from gagent.sync import AgentTimeout, open_agent, run_blocking

        deadline = time.monotonic() + seconds if seconds else None
        if self.socket:
            # the first command syncs; connect, sync and command share the deadline
            opened = open_agent(self.socket, timeout=seconds, sync=False)
        else:
            from gagent.host.sync_domain import open_domain_agent  # needs libvirt: on use

            assert self.domain is not None
            opened = open_domain_agent(
                self.domain, uri=self.connect, transport=self.transport,
                channel_name=self.channel, timeout=seconds,
            )  # fmt: skip
        try:
            with stop_signals_raise(), opened as agent:
                agent.commands.deadline = deadline  # type: ignore[attr-defined]
                log_traffic(agent.commands, self.target)
                return run_blocking(func(agent.commands))
        except AgentTimeout as exc:
            waits = [exc.waiting_for] if exc.waiting_for else []
            raise CommandTimeout(seconds or 0, self.target, waits) from None

    def _run_many(
        self,
        func: Callable[[AgentCommands], Awaitable[Any]],
        default_timeout: float,
        view: Callable[[Any], str] | None,
    ) -> int:
        """``func`` on every domain of --domains/--all; returns the highest exit code."""
        from .fanout import human_line, run_many

        ctx = click.get_current_context()
        if ctx.info_name in _ONE_DOMAIN_ONLY:
            raise UsageError(
                f"'{ctx.command_path}' runs on one domain at a time: give DOMAIN, "
                "not --domains or --all"
            )
        if self.socket or self.domain or (self.domains is not None and self.all_running):
            raise UsageError("give one of DOMAIN, --domains, --all or --socket PATH")

        async def work(session: Any) -> tuple[Any, int]:
            async with session.agent(self.transport, self.channel) as agent:
                log_traffic(agent, session.name)
                return await func(agent), 0

        return run_many(
            self.connect,
            self.domains,
            concurrency=self.concurrency,
            seconds=default_timeout if self.timeout is None else self.timeout,
            work=work,
            as_json=self.output.as_json,
            human=lambda outcome: human_line(outcome, view),
        )


pass_options = click.make_pass_decorator(AgentOptions)

#: Commands that change one guest, or read a local file once: never fanned out.
_ONE_DOMAIN_ONLY = {"exec", "copy-to", "copy-from", "freeze", "thaw"}


@click.group("agent", cls=DomainFirstGroup, subcommand_metavar="[DOMAIN] COMMAND [ARGS]...")
@click.option(
    "--domain",
    metavar="DOMAIN",
    shell_complete=complete_domains,
    help="The domain (name, UUID or ID), also one named like a command: "
    "'--domain info ping' (as 'gagent agent -- info ping').",
)
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    help="Unix socket of the agent channel (as in the domain's <channel><source path=...>).",
)
@connect_option()
@click.option(
    "--transport",
    type=click.Choice(["auto", "socket", "libvirt"]),
    default="auto",
    show_default=True,
    help="For DOMAIN: gagent's channel socket, libvirt's qemuAgentCommand, or pick.",
)
@click.option(
    "--channel",
    "channel",
    default=GAGENT_CHANNEL,
    show_default=True,
    help="Name of gagent's channel in the domain.",
)
@json_option("Print JSON instead of tables.")
@click.option(
    "--timeout",
    type=Seconds(min=0),
    default=None,
    help=f"Overall deadline in seconds (default {DEFAULT_TIMEOUT:g}; "
    f"{LONG_TIMEOUT:g} for exec and copies; 0 for none).",
)
@fan_out_options
@click.pass_context
def agent_group(
    ctx: click.Context,
    domain: str | None,
    socket_path: str | None,
    connect: str | None,
    transport: str,
    channel: str,
    as_json: bool,
    timeout: float | None,
    domains: str | None,
    all_running: bool,
    concurrency: int,
) -> None:
    """Run a guest-agent command on DOMAIN (name, UUID or ID) or on --socket PATH.

    \b
    gagent agent vm1 osinfo
    gagent agent --domain info ping      (a domain named like a command)
    gagent agent --socket /run/vm1-agent.sock ping
    gagent agent --all --json ping
    """
    ctx.obj = AgentOptions(
        socket=socket_path,
        timeout=timeout,
        output=Output(as_json),
        domain=domain,
        connect=connect,
        transport=transport,
        channel=channel,
        domains=parse_domains(domains),
        all_running=all_running,
        concurrency=concurrency,
    )


def _simple(name: str, method: str, help_text: str) -> None:
    @agent_group.command(name, help=help_text)
    @pass_options
    def command(options: AgentOptions) -> None:
        view = VIEWS.get(method)
        result = options.run(lambda agent: getattr(agent, method)(), view=view, blocking=True)
        options.output.emit(result, view)


@agent_group.command("ping")
@pass_options
def ping(options: AgentOptions) -> None:
    """Check that the agent answers and its guest is not frozen (exit 13 if it is)."""

    async def answers_and_thawed(agent: AgentCommands) -> None:
        await agent.ping()
        await agent.ensure_thawed()  # a frozen guest's agent answers pings, and little else

    view = VIEWS.get("ping")
    options.output.emit(options.run(answers_and_thawed, view=view, blocking=True), view)


_simple("osinfo", "osinfo", "Operating system of the guest.")
_simple("hostname", "host_name", "Host name the guest reports.")
_simple("users", "users", "Users logged in to the guest.")
_simple("interfaces", "network_interfaces", "Network interfaces with their addresses.")
_simple("fsinfo", "fsinfo", "Mounted filesystems with usage.")
_simple("disks", "disks", "Block devices the guest sees.")
_simple("time", "time", "Guest clock (ns since the epoch).")


@agent_group.command("info")
@pass_options
def info(options: AgentOptions) -> None:
    """Agent version and its commands (enabled or not)."""
    result = options.run(
        lambda agent: agent.info(),
        view=lambda v: f"version {v.version}, {len(v.enabled_commands)} commands enabled",
        blocking=True,
    )

    def human(value: Any) -> str:
        enabled = value.enabled_commands
        disabled = sorted(set(value.commands) - set(enabled))
        lines = [f"version: {value.version}", f"enabled ({len(enabled)}): {' '.join(enabled)}"]
        if disabled:
            lines.append(f"disabled ({len(disabled)}): {' '.join(disabled)}")
        return "\n".join(lines)

    options.output.emit(result, human)


@agent_group.group("fsfreeze")
def fsfreeze() -> None:
    """Freeze, thaw or query the guest's filesystems."""


@fsfreeze.command("status")
@pass_options
def fsfreeze_status(options: AgentOptions) -> None:
    """thawed or frozen."""
    options.output.emit(options.run(lambda agent: agent.fsfreeze_status(), blocking=True))


@fsfreeze.command("freeze")
@click.option("--mountpoint", "mountpoints", multiple=True, help="Freeze only these (repeat).")
@pass_options
def fsfreeze_freeze(options: AgentOptions, mountpoints: tuple[str, ...]) -> None:
    """Freeze filesystems and leave them frozen (thaw with 'fsfreeze thaw').

    Any failure (no reply, timeout, Ctrl-C, nothing frozen) thaws before exiting.
    """
    from gagent.freeze import freeze as freeze_and_hold

    record = options.run(
        lambda agent: freeze_and_hold(
            agent, list(mountpoints) or None, domain=options.target, retry=options.retry
        )
    )
    options.output.emit({"frozen": record.frozen}, lambda v: f"froze {v['frozen']} filesystem(s)")


@fsfreeze.command("thaw")
@pass_options
def fsfreeze_thaw(options: AgentOptions) -> None:
    """Thaw frozen filesystems and confirm with fsfreeze-status."""
    from gagent.freeze import thaw as thaw_and_confirm

    record = options.run(
        lambda agent: thaw_and_confirm(agent, domain=options.target, retry=options.retry)
    )
    options.output.emit({"thawed": record.thawed}, lambda v: f"thawed {v['thawed']} filesystem(s)")


@agent_group.command("call")
@click.argument("name", metavar="NAME|REQUEST")
@click.argument("json_args", required=False, metavar="[JSON-ARGS]")
@pass_options
def call(options: AgentOptions, name: str, json_args: str | None) -> None:
    """Send any command NAME with optional JSON-ARGS and print the raw reply (or a whole
    REQUEST, as virsh qemu-agent-command takes it: '{"execute": NAME, "arguments": {...}}')."""
    name, arguments = parse_call(name, json_args)
    if name == SYNC_DELIMITED:
        raise UsageError(_sync_delimited_refused(options, arguments))
    result = options.run(lambda agent: agent.call(name, arguments), blocking=True)
    options.output.emit(result)


#: gagent sends it by itself to put the stream in step before a command; its reply is
#: framed for that (a 0xFF byte before the JSON), so 'call' cannot print it as a reply.
SYNC_DELIMITED = "guest-sync-delimited"


def _sync_delimited_refused(options: AgentOptions, arguments: dict[str, Any] | None) -> str:
    """The one line refusing 'call guest-sync-delimited', with the command that does work."""
    if options.socket:
        address = ["--socket", options.socket]
    else:
        address = [
            options.domain or "DOMAIN",
            *(["-c", options.connect] if options.connect else []),
        ]
    echo = json.dumps(arguments if arguments and "id" in arguments else {"id": 1})
    suggestion = shlex.join(["gagent", "agent", *address, "call", "guest-sync", echo])
    return (
        f"gagent sends {SYNC_DELIMITED} by itself before each command (its reply starts "
        f"with a 0xFF byte, not JSON); to see the agent echo an id: {suggestion}"
    )

"""``gagent agent``'s admin operations: what ``qm guest`` and virsh offer beyond queries.

``passwd USER`` (the password from a terminal prompt, or one line of standard
input with ``--password-stdin``: never from the command line, where ``ps`` and
shell histories would keep it), ``fstrim``, ``timezone``, ``vcpus [--set N]``
and ``shutdown|reboot|halt`` (guest-shutdown, which answers only on failure;
confirmed on a terminal unless ``--yes``).

This module registers them on :data:`~.agent.agent_group` (and ``--json``
after every command of the group), and is what the CLI loads for ``gagent
agent`` (:data:`gagent.host.cli.SUBCOMMANDS`): the group's module does not
import it back.  Like the simple queries, each runs on the
blocking client (no trio) on --socket or DOMAIN.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from gagent.errors import AgentError, UsageError

from . import agent_files as _registers_exec_and_copies  # noqa: F401
from .agent import AgentOptions, agent_group, pass_options
from .common import say
from .options import Seconds, accept_after
from .render import format_table, human_bytes

if TYPE_CHECKING:
    from gagent.commands import AgentCommands
    from gagent.hw_types import VCpu

__all__ = ["agent_group", "plan_vcpus", "read_password"]

#: What ``gagent agent DOMAIN MODE`` asks guest-shutdown for, and how it says so.
POWER_MODES = {
    "shutdown": ("powerdown", "power down"),
    "reboot": ("reboot", "reboot"),
    "halt": ("halt", "halt"),
}


def _one_domain(options: AgentOptions, command: str) -> None:
    if options.domains is not None or options.all_running:
        raise UsageError(
            f"'gagent agent {command}' changes one guest at a time: give DOMAIN, "
            "not --domains or --all"
        )


def _agent_words(options: AgentOptions) -> list[str]:
    """``gagent agent`` and the options that name the agent used, to name a command again."""
    words = ["gagent", "agent"]
    if options.socket:
        return [*words, "--socket", options.socket]
    words.append(options.domain or "DOMAIN")
    return [*words, "-c", options.connect] if options.connect else words


# ------------------------------------------------------------------- passwd


def read_password(user: str, target: str, *, from_stdin: bool, again: str) -> str:
    """The new password: one line of standard input, or asked twice on the terminal.
    ``again`` is the command that gives it on standard input (named when there is no
    terminal to ask on)."""
    if from_stdin:
        text = sys.stdin.readline()
        if sys.stdin.read(1):
            raise UsageError("--password-stdin takes one line (the password), not more")
        password = text.removesuffix("\n").removesuffix("\r")
    elif not sys.stdin.isatty():
        raise UsageError(
            f"no terminal to ask {user}'s password on: give it on standard input: {again} < FILE"
        )
    else:
        import getpass

        password = getpass.getpass(f"New password for {user} in {target}: ", sys.stderr)
        if getpass.getpass("Retype it: ", sys.stderr) != password:
            raise UsageError("the two passwords differ: nothing was changed, run passwd again")
    if not password:
        raise UsageError(f"an empty password would let anyone log in as {user}: give one")
    return password


@agent_group.command("passwd")
@click.argument("user")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (one line) instead of asking on the terminal.",
)
@pass_options
def passwd(options: AgentOptions, user: str, password_stdin: bool) -> None:
    """Set USER's password in the guest (guest-set-user-password).

    The password is asked twice on the terminal, or read from standard input
    with --password-stdin; it is never taken from the command line.  The
    guest hashes it (chpasswd).
    """
    _one_domain(options, "passwd")
    again = shlex.join([*_agent_words(options), "passwd", user, "--password-stdin"])
    password = read_password(user, options.target, from_stdin=password_stdin, again=again)

    async def set_password(agent: AgentCommands) -> None:
        try:
            await agent.set_user_password(user, password)
        except AgentError as exc:
            exc.arguments = {"username": user, "password": "(redacted)"}
            raise

    options.run(set_password, blocking=True)
    options.output.emit(
        {"user": user, "password_set": True},
        lambda v: f"password of {v['user']} set in {options.target}",
    )


# ------------------------------------------------------------ fstrim, timezone


def fstrim_view(results: list[Any]) -> str:
    if not results:
        return "(no filesystem to trim)"
    rows = [(r.path, human_bytes(r.trimmed) if r.error is None else "-", r.error or "ok")
            for r in results]  # fmt: skip
    return format_table(["path", "trimmed", "result"], rows)


@agent_group.command("fstrim")
@click.option(
    "--minimum",
    type=click.IntRange(min=0),
    default=None,
    metavar="BYTES",
    help="Skip free ranges smaller than this (the guest's fstrim -m).",
)
@pass_options
def fstrim(options: AgentOptions, minimum: int | None) -> None:
    """Discard unused blocks of the guest's mounted filesystems (guest-fstrim)."""
    results = options.run(lambda agent: agent.fstrim(minimum), view=fstrim_view, blocking=True)
    options.output.emit(results, fstrim_view)


def timezone_view(tz: Any) -> str:
    sign = "-" if tz.offset < 0 else "+"
    hours, rest = divmod(abs(tz.offset), 3600)
    return f"{tz.zone or '(unnamed)'} (UTC{sign}{hours:02d}:{rest // 60:02d})"


@agent_group.command("timezone")
@pass_options
def timezone(options: AgentOptions) -> None:
    """The guest's time zone and its offset from UTC (guest-get-timezone)."""
    tz = options.run(lambda agent: agent.timezone(), view=timezone_view, blocking=True)
    options.output.emit(tz, timezone_view)


# -------------------------------------------------------------------- vcpus


def plan_vcpus(current: Sequence[VCpu], online: int, *, grow: str) -> list[VCpu]:
    """The changes that leave exactly ``online`` of the guest's vCPUs online.

    The fewest changes: vCPUs that cannot go offline stay online first, then
    those online already, lowest ids first.  ``grow`` is the command that gives
    the domain more vCPUs (named when ``online`` is more than the guest has).
    """
    from gagent.hw_types import VCpu

    if online < 1:
        raise UsageError("--set wants at least 1 vCPU online")
    if online > len(current):
        raise UsageError(
            f"the guest has {len(current)} vCPUs, fewer than {online}: add them to the "
            f"domain first ({grow})"
        )
    keep = sorted(current, key=lambda c: (c.can_offline is not False, not c.online, c.logical_id))
    pinned = [c for c in current if c.online and c.can_offline is False]
    if len(pinned) > online:
        raise UsageError(
            f"{len(pinned)} of the guest's vCPUs cannot go offline: --set at least {len(pinned)}"
        )
    wanted = {c.logical_id for c in keep[:online]}
    return [
        VCpu(logical_id=c.logical_id, online=c.logical_id in wanted)
        for c in sorted(current, key=lambda c: c.logical_id)
        if c.online != (c.logical_id in wanted)
    ]


def vcpus_view(vcpus: list[Any]) -> str:
    ordered = sorted(vcpus, key=lambda c: c.logical_id)
    rows = [(c.logical_id, "online" if c.online else "offline", c.can_offline) for c in ordered]
    total = sum(c.online for c in vcpus)
    return (
        format_table(["vcpu", "state", "can go offline"], rows)
        + f"\n{total} of {len(vcpus)} online"
    )


def _grow_command(options: AgentOptions, count: int) -> str:
    words = ["virsh", *(["-c", options.connect] if options.connect else [])]
    return shlex.join([*words, "setvcpus", options.domain or "DOMAIN", str(count), "--live"])


@agent_group.command("vcpus")
@click.option(
    "--set",
    "online",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Bring vCPUs online or offline in the guest until exactly N are online.",
)
@pass_options
def vcpus(options: AgentOptions, online: int | None) -> None:
    """The guest's vCPUs and which are online; --set N changes that (guest-set-vcpus).

    This is the guest's view: the domain's vCPU count itself changes with
    'virsh setvcpus'.
    """
    if online is None:
        options.output.emit(
            options.run(lambda agent: agent.vcpus(), view=vcpus_view, blocking=True), vcpus_view
        )
        return
    _one_domain(options, "vcpus --set")
    grow = _grow_command(options, online)

    async def set_online(agent: AgentCommands) -> list[VCpu]:
        changes = plan_vcpus(await agent.vcpus(), online, grow=grow)
        if changes:
            done = await agent.set_vcpus(changes)
            if done < len(changes):
                failed = changes[done]
                state = "online" if failed.online else "offline"
                raise AgentError(
                    "guest-set-vcpus",
                    "GenericError",
                    f"made {done} of {len(changes)} changes; the guest did not bring vCPU "
                    f"{failed.logical_id} {state} (see its kernel log)",
                )
        return await agent.vcpus()

    options.output.emit(options.run(set_online, blocking=True), vcpus_view)


# -------------------------------------------------------------------- power


def _power_command(name: str, mode: str, verb: str) -> None:
    @agent_group.command(
        name,
        help=f"Ask the guest to {verb} (guest-shutdown mode {mode}; no reply on success).\n\n"
        "On a terminal it asks first, unless --yes.  It returns once the agent took the "
        "request; the guest acts on it in its own time (follow it with 'gagent status').",
    )
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @pass_options
    def command(options: AgentOptions, yes: bool) -> None:
        target = options.target
        if options.all_running:
            target = "every running domain"
        elif options.domains is not None:
            target = "domains " + ",".join(options.domains)
        if not yes and sys.stdin.isatty():
            if not click.confirm(f"{verb.capitalize()} {target}?", default=False, err=True):
                say("gagent: nothing sent (answer y, or pass --yes)")
                raise click.exceptions.Exit(1)

        async def request(agent: AgentCommands) -> dict[str, str]:
            await agent.shutdown(mode)
            return {"requested": mode}

        result = options.run(request, view=lambda v: f"{mode} requested", blocking=True)
        options.output.emit(result, lambda v: f"asked {target} to {verb}")


for _name, (_mode, _verb) in POWER_MODES.items():
    _power_command(_name, _mode, _verb)


# ---------------------------- --json, -c and --timeout after the command too


def _json_after(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(AgentOptions).output.as_json = True  # type: ignore[union-attr]


def _connect_after(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_object(AgentOptions).connect = value  # type: ignore[union-attr]


def _timeout_after(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None:
        ctx.find_object(AgentOptions).timeout = value  # type: ignore[union-attr]


#: What every command of 'gagent agent' also takes after its name, as the group's own
#: option before it (the value given after wins): (names, what it is, callback).
_AFTER = [
    (["--json", "as_json"], {"is_flag": True, "help": "Print JSON (as --json before the command)."},
     _json_after),
    (["-c", "--connect", "connect_after"],
     {"metavar": "URI", "help": "libvirt URI (as -c before the command)."}, _connect_after),
    (["--timeout", "timeout_after"],
     {"type": Seconds(min=0), "help": "Overall deadline in seconds (as --timeout before the "
      "command)."}, _timeout_after),
]  # fmt: skip


# ``gagent agent vm1 info --json -c URI --timeout 5`` as ``gagent agent vm1 --json -c URI
# --timeout 5 info``: every command of the group takes them (but exec, whose words after
# the program are its own, and which has its own --json before ARGV).
for _names, _attrs, _callback in _AFTER:
    accept_after(agent_group, _names, _callback, leaves_only=True, skip=("exec",), **_attrs)

"""The ``gagent`` command line.

Thin by design: commands parse arguments, call the library, render results.
Library errors and click's own usage errors become one-line messages and exit
codes here, in :func:`main`, and nowhere else.

Exit codes: :data:`EXIT_CODES`, shown by ``gagent --help`` (a test holds the
table, the codes :func:`exit_code_for` returns, the subcommands' help and the
README to each other).
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from gettext import gettext

import click

from gagent.errors import (
    AgentError,
    AgentUnavailable,
    CommandDisabled,
    CommandNotFound,
    CommandUnavailable,
    ConnectionLost,
    FrozenStateViolation,
    GagentError,
    GuestIsFrozen,
    HostError,
    ProtocolError,
    UsageError,
)
from gagent.extras import missing_extra, needs_extra

from .addressing import usage_context
from .common import CommandTimeout, Interrupted, say
from .options import (
    COMMAND_ARGS,
    GlobalOptions,
    accept_verbose_after,
    apply_global_options,
    global_options,
)

__all__ = ["cli", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_UNAVAILABLE = 5
EXIT_AGENT_ERROR = 6
EXIT_CONNECTION = 7
EXIT_HOST = 8
EXIT_THAW_UNCONFIRMED = 9
EXIT_GUEST_FROZEN = 13
EXIT_MISSING_PART = 14
EXIT_INTERRUPTED = 130

#: Every exit code gagent's commands return, and what it means.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success ('agent exec' exits with the guest program's own code)",
    EXIT_ERROR: "any other error (also a local file or pipe that failed)",
    EXIT_USAGE: "bad usage: unknown option, malformed arguments, a refused path or name",
    EXIT_UNREACHABLE: "agent unreachable: no channel, no socket, nothing listening, permission",
    EXIT_TIMEOUT: "the command's --timeout passed (libvirtd, the agent or a remote host)",
    EXIT_UNAVAILABLE: "command not available: unknown to the agent, or disabled there",
    EXIT_AGENT_ERROR: "the agent answered with an error",
    EXIT_CONNECTION: "connection lost or protocol violation",
    EXIT_HOST: "libvirt/host error (e.g. no such domain)",
    EXIT_THAW_UNCONFIRMED: "a thaw could not be confirmed: the guest may still be frozen",
    10: "a check failed: migrate-check/migrate, or fsfreeze check (a freeze would not work)",
    11: "migrate-check/migrate: warnings not accepted",
    12: "migrate: the migration itself failed",
    EXIT_GUEST_FROZEN: "the guest is frozen: its agent refuses commands until thawed",
    EXIT_MISSING_PART: "a part of gagent is not installed: the message names the extra to install",
    129: "interrupted by SIGHUP (a dropped session); a pending thaw ran first",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT); a pending thaw ran first",
    143: "interrupted by SIGTERM (systemd, timeout(1)); a pending thaw ran first",
}


def _exit_code_help() -> str:
    lines = [f"  {code:<4}{meaning}" for code, meaning in EXIT_CODES.items()]
    return "\b\nExit codes:\n" + "\n".join(lines)


#: Each subcommand: the module and name it lives under, and the short help that
#: ``gagent --help`` lists (a test holds it to the command's own).  A command's
#: module is imported when it runs, so a one-shot ``gagent agent --socket S ping``
#: loads neither trio nor lxml nor libvirt, and ``gagent --help`` loads none.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "agent": (
        "admin:agent_group",  # the group of agent.py, with admin.py's commands added
        "Run a guest-agent command on DOMAIN (name, UUID or ID) or on --socket PATH.",
    ),
    "channel": ("domain:channel_group", "Add, remove or list a domain's agent channels."),
    "config": (
        "config:config_group",
        "Show gagent's configuration (files, environment, defaults).",
    ),
    "demo": (
        "demo:demo",
        "Show gagent on embedded defaults: a local qemu-ga (dangerous RPCs blocked) and "
        "libvirt's built-in test:///default.",
    ),
    "exporter": (
        "exporter:exporter",
        "Serve guest state to Prometheus, collected from the agents in the background.",
    ),
    "fsfreeze": (
        "freeze:fsfreeze_group",
        "Freeze, thaw or query a domain's filesystems through its agent.",
    ),
    "inventory": (
        "inventory:inventory_group",
        "Every guest on every hypervisor (xCAT rscan semantics), stored in a database.",
    ),
    "migrate": (
        "migrate:migrate",
        "Run the checks, then migrate DOMAIN to DEST_URI if they allow it.",
    ),
    "migrate-check": (
        "migrate:migrate_check",
        "Check whether DOMAIN can migrate to DEST_URI (exit 0 yes, 10 a FAIL, 11 warnings).",
    ),
    "snapshot": (
        "freeze:snapshot_group",
        "External disk-only snapshots: consistent through a freeze that always ends.",
    ),
    "status": ("domain:status", "One line: DOMAIN's power state and whether its agent answers."),
    "thaw": (
        "freeze:thaw_command",
        "EMERGENCY: thaw DOMAIN through every agent it has (ours and libvirt's).",
    ),
    "watch": (
        "domain:watch",
        "Stream channel state changes and lifecycle/agent events (all domains or DOMAIN).",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands (:data:`SUBCOMMANDS`) are imported when first used.

    As in click's documentation on lazy loading, plus a help listing that
    imports nothing: it shows the short help of :data:`SUBCOMMANDS` for the
    commands not loaded yet.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in SUBCOMMANDS:
            self.add_command(load_subcommand(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and args[0] not in SUBCOMMANDS:
            # An unknown name: click suggests "Did you mean" among the loaded commands.
            for name in SUBCOMMANDS:
                self.get_command(ctx, name)
        # what follows the command: a broken configuration file must not stop '--help'
        ctx.meta[COMMAND_ARGS] = args[1:]
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:  # not loaded: its listed help, cut as click cuts it
                short = click.Command(name, help=SUBCOMMANDS[name][1]).get_short_help_str(limit)
            elif command.hidden:
                continue
            else:
                short = command.get_short_help_str(limit)
            rows.append((name, short))
        with formatter.section(gettext("Commands")):
            formatter.write_dl(rows)


def load_subcommand(name: str) -> click.Command:
    """Import the module of subcommand ``name`` and return the command."""
    module_name, attribute = SUBCOMMANDS[name][0].split(":")
    command = getattr(importlib.import_module(f"{__name__}.{module_name}"), attribute)
    assert isinstance(command, click.Command), command
    accept_verbose_after(command)
    return command


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_exit_code_help(),
)
@click.version_option(package_name="gagent")
@global_options
@click.pass_context
def cli(ctx: click.Context, connect: str | None, as_json: bool, verbose: int) -> None:
    """Talk to QEMU guest agents: channels, commands, freezes, inventory."""
    apply_global_options(ctx, GlobalOptions(connect, as_json, verbose))


def exit_code_for(error: BaseException) -> int:
    """The exit code of a library error (most specific class first)."""
    table: list[tuple[type[BaseException], int]] = []
    freeze = sys.modules.get("gagent.freeze")
    if freeze is not None:  # not imported: none of its errors can have been raised
        table += [
            (freeze.ThawUnconfirmed, EXIT_THAW_UNCONFIRMED),
            (freeze.AlreadyFrozen, EXIT_GUEST_FROZEN),  # frozen before gagent froze a thing
        ]
    table += [
        (UsageError, EXIT_USAGE),
        (AgentUnavailable, EXIT_UNREACHABLE),
        (GuestIsFrozen, EXIT_GUEST_FROZEN),
        (CommandUnavailable, EXIT_UNAVAILABLE),
        (FrozenStateViolation, EXIT_UNAVAILABLE),
        (CommandDisabled, EXIT_UNAVAILABLE),
        (CommandNotFound, EXIT_UNAVAILABLE),
        (AgentError, EXIT_AGENT_ERROR),
        (CommandTimeout, EXIT_TIMEOUT),
        *_agent_timeout(),
        (ConnectionLost, EXIT_CONNECTION),
        (ProtocolError, EXIT_CONNECTION),
        (HostError, EXIT_HOST),
    ]
    for kind, code in table:
        if isinstance(error, kind):
            return code
    return EXIT_ERROR


def _single(group: BaseExceptionGroup) -> BaseException | None:
    """The one error inside (nested) nursery exception groups, if there is just one."""
    leaves = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    if len(leaves) == 1:
        return leaves[0]
    # Several tasks failed (e.g. on one lost connection): the first gagent error
    # says what went wrong; anything else is a bug and keeps its traceback.
    if leaves and all(isinstance(leaf, GagentError) for leaf in leaves):
        return leaves[0]
    return None


def _missing_command(error: click.UsageError, ctx: click.Context) -> bool:
    """Whether click stopped at a group that was given no subcommand.

    Click >= 8.2 raises ``NoArgsIsHelpError`` when a group got no words at all (as
    ``gagent agent vm1`` leaves it once DOMAIN is taken); with only options
    (``gagent agent --socket PATH``) it fails with its own "Missing command.".
    """
    if not isinstance(ctx.command, click.Group):
        return False
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", None)
    if no_args is not None and isinstance(error, no_args):
        return True
    # The same gettext call as click's, so translations match too.
    return ctx.invoked_subcommand is None and error.message == gettext("Missing command.")


def _usage_error(error: click.UsageError, words: list[str]) -> int:
    """Report a click usage error on one line, naming the --help of the subcommand typed."""
    # click's parser raises a few errors (an option missing its value) without a context
    ctx = error.ctx or usage_context(cli, words, "gagent")
    if ctx is None:
        print(f"gagent: error: {error.format_message().removesuffix('.')}", file=sys.stderr)
        return EXIT_USAGE
    missing = _missing_command(error, ctx)
    names: list[str] = []
    node: click.Context | None = ctx
    while node is not None and node.parent is not None:
        names.insert(0, node.info_name or "")
        node = node.parent
    if missing and list(words) == names:
        # Nothing typed but command names (``gagent``, ``gagent agent``): show the help.
        click.echo(ctx.get_help(), err=True, color=ctx.color)
        return EXIT_USAGE
    if missing:
        group = ctx.command
        assert isinstance(group, click.Group)
        choices = [
            name
            for name in group.list_commands(ctx)
            if not getattr(group.get_command(ctx, name), "hidden", False)
        ]
        typed = shlex.join([ctx.find_root().info_name or "gagent", *words])
        message = f"missing COMMAND after '{typed}' (one of: {', '.join(choices)})"
    else:
        message = error.format_message().removesuffix(".")
    hint = ""
    help_names = ctx.command.get_help_option_names(ctx)
    if help_names and ctx.command.get_help_option(ctx) is not None:
        hint = f" (see: {ctx.command_path} {max(help_names, key=len)})"
    print(f"gagent: error: {message}{hint}", file=sys.stderr)
    return EXIT_USAGE


def _agent_timeout() -> list[tuple[type[BaseException], int]]:
    """gagent.sync's timeout, when that module is loaded (else nothing raised it)."""
    sync = sys.modules.get("gagent.sync")
    return [] if sync is None else [(sync.AgentTimeout, EXIT_TIMEOUT)]


class _NeverRaised(Exception):
    """Stands for trio.TooSlowError while trio is not imported (nothing can raise it)."""


def _trio_too_slow() -> type[BaseException]:
    trio = sys.modules.get("trio")
    return _NeverRaised if trio is None else trio.TooSlowError


#: The variable through which a shell asks click for completions (click's name for prog "gagent").
COMPLETE_VAR = "_GAGENT_COMPLETE"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map every error to a message and an exit code."""
    if COMPLETE_VAR in os.environ:
        # a shell asks for completions: gagent's bash class must be registered before
        # click answers (not loaded on an ordinary run, which does not need it)
        from . import completion  # noqa: F401
    try:
        try:
            result = cli.main(args=argv, prog_name="gagent", standalone_mode=False)
        except BaseExceptionGroup as group:
            # Errors from inside trio nurseries arrive grouped; report the error itself.
            single = _single(group)
            if single is None:
                raise
            raise single from None
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        return _usage_error(exc, sys.argv[1:] if argv is None else argv)
    except click.ClickException as exc:
        print(f"gagent: error: {exc.format_message()}", file=sys.stderr)
        return EXIT_USAGE
    except (click.Abort, KeyboardInterrupt):
        say("gagent: interrupted")
        return EXIT_INTERRUPTED
    except Interrupted as exc:
        say(f"gagent: {exc}")
        return exc.exit_code
    except _trio_too_slow():
        say(
            "gagent: error: timed out waiting for an answer (is qemu-ga running in the guest? "
            "raise --timeout for slow operations)"
        )
        return EXIT_TIMEOUT
    except GagentError as exc:
        say(f"gagent: error: {exc}")
        return exit_code_for(exc)
    except ImportError as exc:
        missing = missing_extra(exc)
        if missing is None:
            raise
        say(f"gagent: error: {needs_extra('this command', *missing)}")
        return EXIT_MISSING_PART
    except OSError as exc:  # the local side: a full disk, a closed pipe, a permission
        say(f"gagent: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_ERROR
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

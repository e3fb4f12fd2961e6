"""The ``gagent`` command line.

Thin by design: commands parse arguments, call the library, render results.
Library errors and click's own usage errors become one-line messages and exit
codes here, in :func:`main`, and nowhere else.

Exit codes: :data:`EXIT_CODES`, shown by ``gagent --help`` (a test holds the
table, the codes :func:`exit_code_for` returns, the subcommands' help and the
README to each other).
"""

from __future__ import annotations

import shlex
import sys
from gettext import gettext

import click
import trio

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
from gagent.freeze import AlreadyFrozen, ThawUnconfirmed

from .agent import agent_group

# Commands are imported under other names than their modules, which would be shadowed.
from .common import CommandTimeout, Interrupted, say
from .demo import demo as demo_command
from .domain import channel_group, status, watch
from .freeze import fsfreeze_group, snapshot_group, thaw_command
from .inventory import inventory_group
from .migrate import migrate as migrate_command
from .migrate import migrate_check

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
    10: "migrate-check/migrate: a check failed",
    11: "migrate-check/migrate: warnings not accepted",
    12: "migrate: the migration itself failed",
    EXIT_GUEST_FROZEN: "the guest is frozen: its agent refuses commands until thawed",
    129: "interrupted by SIGHUP (a dropped session); a pending thaw ran first",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT); a pending thaw ran first",
    143: "interrupted by SIGTERM (systemd, timeout(1)); a pending thaw ran first",
}


def _exit_code_help() -> str:
    lines = [f"  {code:<4}{meaning}" for code, meaning in EXIT_CODES.items()]
    return "\b\nExit codes:\n" + "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_exit_code_help())
@click.version_option(package_name="gagent")
def cli() -> None:
    """Talk to QEMU guest agents: channels, commands, freezes, inventory."""


cli.add_command(agent_group)
cli.add_command(demo_command)
cli.add_command(channel_group)
cli.add_command(status)
cli.add_command(watch)
cli.add_command(migrate_check)
cli.add_command(migrate_command)
cli.add_command(fsfreeze_group)
cli.add_command(snapshot_group)
cli.add_command(thaw_command)
cli.add_command(inventory_group)


def exit_code_for(error: BaseException) -> int:
    """The exit code of a library error (most specific class first)."""
    table: list[tuple[type[BaseException], int]] = [
        (ThawUnconfirmed, EXIT_THAW_UNCONFIRMED),
        (AlreadyFrozen, EXIT_GUEST_FROZEN),  # found frozen before gagent froze anything
        (UsageError, EXIT_USAGE),
        (AgentUnavailable, EXIT_UNREACHABLE),
        (GuestIsFrozen, EXIT_GUEST_FROZEN),
        (CommandUnavailable, EXIT_UNAVAILABLE),
        (FrozenStateViolation, EXIT_UNAVAILABLE),
        (CommandDisabled, EXIT_UNAVAILABLE),
        (CommandNotFound, EXIT_UNAVAILABLE),
        (AgentError, EXIT_AGENT_ERROR),
        (CommandTimeout, EXIT_TIMEOUT),
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


def _context_of(error: click.UsageError) -> click.Context | None:
    """The context the usage error is about.

    Click's parser raises some errors (an option missing its value) without one:
    then the innermost click frame that had a context was parsing for it.
    """
    if error.ctx is not None:
        return error.ctx
    found = None
    tb = error.__traceback__
    while tb is not None:
        ctx = tb.tb_frame.f_locals.get("ctx")
        if isinstance(ctx, click.Context):
            found = ctx
        tb = tb.tb_next
    return found


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
    ctx = _context_of(error)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map every error to a message and an exit code."""
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
    except trio.TooSlowError:
        say(
            "gagent: error: timed out waiting for an answer (is qemu-ga running in the guest? "
            "raise --timeout for slow operations)"
        )
        return EXIT_TIMEOUT
    except GagentError as exc:
        say(f"gagent: error: {exc}")
        return exit_code_for(exc)
    except OSError as exc:  # the local side: a full disk, a closed pipe, a permission
        say(f"gagent: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_ERROR
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``gagent`` command line.

Thin by design: commands parse arguments, call the library, render results.
Library errors and click's own usage errors become one-line messages and exit
codes here, in :func:`main`, and nowhere else.

Exit codes::

    0   success (``agent exec`` exits with the guest program's own code)
    1   any other gagent error
    2   bad usage: unknown option, malformed JSON arguments, bad path
    3   agent unreachable: no socket, nothing listening, permission denied
    4   timed out waiting for the agent
    5   command not available: unknown to the agent, or disabled there
    6   the agent answered with an error
    7   connection lost or protocol violation
    8   libvirt/host error
    9   a thaw could not be confirmed: the guest may still be frozen
    10  migrate-check: a check failed (11: warnings refused, 12: migration failed)
    13  the guest is frozen: its agent refuses commands until thawed (the error names the thaw)
    130 interrupted
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
from gagent.freeze import ThawUnconfirmed

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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

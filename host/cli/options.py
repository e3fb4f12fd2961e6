"""Options every gagent command shares: ``-c/--connect``, ``--json`` and ``-v/--verbose``.

virsh takes ``-c URI`` before the command (``gagent -c URI status vm1``);
gagent takes it there and after the command, as each command's own
``-c/--connect``.  The same goes for ``--json``.  Given before the command, the
value becomes the default of the command's own option (click's ``default_map``,
filled for the command typed and its subcommands): a value given after the
command wins.  A command with no such option refuses it, in one line.

``-v`` logs gagent's information to stderr; ``-vv`` adds every agent request
and reply (:func:`log_traffic`), passwords redacted and long strings cut.

Only click and logging are imported: the one-shot commands stay light.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from gagent.errors import UsageError
from gagent.host.channel_names import GAGENT_CHANNEL

if TYPE_CHECKING:
    from gagent.commands import AgentCommands

__all__ = [
    "COMMAND_ARGS",
    "CONNECT_HELP",
    "GlobalOptions",
    "accept_after",
    "apply_global_options",
    "channel_option",
    "connect_option",
    "global_options",
    "json_option",
    "log_traffic",
]  # fmt: skip

#: The logger of the agent traffic (``-vv``).
traffic = logging.getLogger("gagent.traffic")
#: A string longer than this is cut in the log (file contents, base64 payloads).
LOGGED_STRING = 200
#: What a password argument is logged as.
REDACTED = "(redacted)"

#: ctx.meta key: the words after the command's name (set by the gagent group).
COMMAND_ARGS = "gagent.command_args"
#: GlobalOptions field -> the option of a command it is the default of (by its long name,
#: whatever the parameter is called: exporter's repeatable -c is ``connects``)
_INHERITED = {"connect": "--connect", "as_json": "--json"}


@dataclass(frozen=True)
class GlobalOptions:
    """What was given before the command."""

    connect: str | None = None
    as_json: bool = False
    verbose: int = 0


class Seconds(click.FloatRange):
    """A number of seconds in a range (as click.FloatRange), and finite: ``nan`` and ``inf``
    are refused as the command line's mistake, before any deadline is built from them."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return seconds


#: What -c/--connect means, wherever a command takes it.
CONNECT_HELP = "libvirt URI (as virsh -c; default: $LIBVIRT_DEFAULT_URI, else libvirt's default)."


def connect_option(help: str = CONNECT_HELP) -> Any:
    """A command's ``-c/--connect URI`` (its value then also comes from before the command)."""
    return click.option("-c", "--connect", metavar="URI", help=help)


#: What --channel means, wherever a command takes it.
CHANNEL_HELP = "Name of gagent's channel in the domain (configuration file: 'channel')."


def channel_option(func: Any) -> Any:
    """A command's ``--channel NAME``: the virtio-serial port gagent's agent listens on.

    The configuration file's ``channel`` becomes its default (as for every option
    named in :data:`gagent.host.cli.config.STRING_KEYS`)."""
    return click.option(
        "--channel", metavar="NAME", default=GAGENT_CHANNEL, show_default=True, help=CHANNEL_HELP
    )(func)


def json_option(help: str = "Print JSON.") -> Any:
    """A command's ``--json`` (its value then also comes from ``gagent --json CMD``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def global_options(func: Any) -> Any:
    """The options of ``gagent`` itself (before the command)."""
    func = click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)(func)
    func = click.option(
        "--json", "as_json", is_flag=True, help="JSON output, for commands that have --json."
    )(func)
    return connect_option("libvirt URI for the command, as virsh -c (the command's own -c wins).")(
        func
    )


#: -v/--verbose's help, before the command and after it.
VERBOSE_HELP = (
    "Log to stderr: -v what gagent does, -vv also every agent request and reply "
    "(passwords redacted)."
)


def accept_after(
    command: click.Command,
    names: list[str],
    callback: Any,
    *,
    leaves_only: bool = False,
    skip: tuple[str, ...] = (),
    **attrs: Any,
) -> None:
    """``command`` and every command under it (but those named in ``skip``; groups too
    unless ``leaves_only``) also take the option ``names`` after their name; ``callback``
    puts its value where the same option before the command would have.  A command with
    an option of those flags of its own keeps it."""
    flags = {name for name in names if name.startswith("-")}
    subs = getattr(command, "commands", {})
    taken = {flag for p in command.params if isinstance(p, click.Option) for flag in p.opts}
    if not (subs and leaves_only) and not taken & flags:
        command.params.append(click.Option(names, expose_value=False, callback=callback, **attrs))
    for name, sub in subs.items():
        if name not in skip:
            accept_after(sub, names, callback, leaves_only=leaves_only, skip=skip, **attrs)


def accept_verbose_after(command: click.Command) -> None:
    """``gagent status vm1 -v`` as ``gagent -v status vm1``: ``command`` and every command
    under it take -v/--verbose too (counted with those before the command)."""
    names = ["-v", "--verbose", "verbose_after"]
    accept_after(command, names, _verbose_after, count=True, help=VERBOSE_HELP)


def _verbose_after(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        before = ctx.find_object(GlobalOptions)
        _configure_logging(value + (before.verbose if before else 0))


def apply_global_options(ctx: click.Context, options: GlobalOptions) -> None:
    """Make ``options`` and the configuration files the defaults of the command about to
    run, and set up logging.

    Called by the ``gagent`` group before its subcommand's context exists: the
    subcommand (loaded by then) and its own subcommands get a ``default_map``
    holding the values given, for the parameters they have.  A value given
    before the command wins over a file's (:mod:`gagent.host.cli.config`); a
    file's value goes only to the commands that have its option.
    """
    ctx.obj = options
    _configure_logging(options.verbose)
    if ctx.invoked_subcommand is None:
        return
    from .config import file_values, load_settings

    name = ctx.invoked_subcommand
    try:
        settings = load_settings()
    except UsageError as exc:
        if not _asks_for_help(ctx):
            raise
        # the help is read to fix things: show it, and the file's problem in one line
        click.echo(f"gagent: warning: {exc} (ignored for --help)", err=True)
        settings = {}
    given = {
        field: value for field, value in vars(options).items() if field in _INHERITED and value
    }
    if not given and not settings:
        return
    group = ctx.command
    assert isinstance(group, click.Group)
    command = group.get_command(ctx, name)
    if command is None:
        return
    defaults, taken = _defaults_for(command, given)
    untaken = sorted(set(given) - taken)
    if untaken:
        option = _INHERITED[untaken[0]]
        shown = "-c/--connect" if option == "--connect" else option
        raise UsageError(f"'gagent {name}' takes no {shown}: leave it out")
    from_files, _ = _defaults_for(command, file_values(settings, name))
    ctx.default_map = {name: _merged(from_files, defaults)}


def _asks_for_help(ctx: click.Context) -> bool:
    """Whether the command line asks for help (or click completes it): then nothing runs."""
    if ctx.resilient_parsing:
        return True
    rest = ctx.meta.get(COMMAND_ARGS, [])
    rest = rest[: rest.index("--")] if "--" in rest else rest
    return any(word in ctx.help_option_names for word in rest)


def _merged(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``under`` with ``over``'s values in its place (nested command tables merged)."""
    merged = dict(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def _defaults_for(command: click.Command, given: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """``command``'s default_map for the ``given`` values, and which of them it takes.

    ``given`` is keyed by GlobalOptions field (``connect``) or by option long name
    (``--timeout``, as the configuration files give them)."""
    defaults: dict[str, Any] = {}
    taken = set()
    for name, value in given.items():
        option = _INHERITED.get(name, name)
        for param in command.params:
            if param.name and option in getattr(param, "opts", ()):
                defaults[param.name] = (value,) if param.multiple else value
                taken.add(name)
    for name, sub in getattr(command, "commands", {}).items():
        sub_defaults, sub_taken = _defaults_for(sub, given)
        if sub_defaults:
            defaults[name] = sub_defaults
        taken |= sub_taken
    return defaults, taken


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """gagent's log lines on the stderr of the moment (one per process)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("gagent: %(levelname)s: %(name)s: %(message)s"))


def _configure_logging(verbose: int) -> None:
    """-v: INFO, -vv: DEBUG, on stderr; without -v, what an earlier run in this process
    set (tests call main many times) is undone."""
    logger = logging.getLogger("gagent")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if not verbose:
        logger.setLevel(logging.NOTSET)
        return
    logger.addHandler(_StderrHandler())
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


# ------------------------------------------------------------- agent traffic


def redacted(value: Any) -> Any:
    """``value`` as logged: any ``password`` member replaced, long strings cut."""
    if isinstance(value, dict):
        return {
            key: REDACTED if "password" in str(key).lower() else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redacted(item) for item in value]
    if isinstance(value, str) and len(value) > LOGGED_STRING:
        return f"{value[:LOGGED_STRING]}... ({len(value)} chars)"
    return value


def log_traffic(agent: AgentCommands, name: str) -> None:
    """Log (info) which agent this is, and with debug logging on each request ``agent``
    sends and what comes back.

    Wraps this one object's transport methods (``execute`` and
    ``execute_decoded``, which every command goes through); nothing else changes.
    """
    route = getattr(agent, "name", None) or name
    logging.getLogger("gagent.agent").info("talking to the agent of %s", route)
    if not traffic.isEnabledFor(logging.DEBUG):
        return
    execute, execute_decoded = agent.execute, agent.execute_decoded

    async def logged(command: str, arguments: dict[str, Any] | None, send: Any) -> Any:
        traffic.debug("%s -> %s %s", name, command, redacted(arguments or {}))
        try:
            reply = await send()
        except Exception as exc:
            traffic.debug("%s <- %s failed: %s", name, command, exc)
            raise
        shown = repr(reply)
        if len(shown) > 4 * LOGGED_STRING:
            shown = f"{shown[: 4 * LOGGED_STRING]}... ({len(shown)} chars)"
        traffic.debug("%s <- %s %s", name, command, shown)
        return reply

    async def logged_execute(command: str, arguments: dict[str, Any] | None = None) -> Any:
        return await logged(command, arguments, lambda: execute(command, arguments))

    async def logged_decoded(command: str, arguments: dict[str, Any] | None, decoder: Any) -> Any:
        return await logged(
            command, arguments, lambda: execute_decoded(command, arguments, decoder)
        )

    agent.execute = logged_execute  # type: ignore[method-assign]
    agent.execute_decoded = logged_decoded  # type: ignore[method-assign]

"""Replacing a guest file atomically, for :func:`gagent.transfer.copy_to_guest`.

qemu-ga can open, write and close files but cannot rename, chmod or create a
file exclusively (guest-file-open knows no "x" mode, and every file it creates
gets mode 0666 whatever its umask).  So the guest's own shell does those three
small steps through guest-exec, and the data goes through the guest-file API:

1. :func:`make_temp`: resolve GUEST_PATH (a symlink is followed to the file it
   names, so the link stays), refuse a directory or anything not a regular
   file, and create a private (0600) temporary file beside it with ``mktemp``
   (exclusive creation, unique name, same filesystem as the destination);
2. the caller writes the data into that file and closes it (qemu-ga opens an
   existing file without changing its mode);
3. :func:`put_in_place`: ``chmod MODE``, the old file's owner and group when
   there was one, then ``mv -f`` over the destination: rename(2), atomic; the
   old file stays whole until that moment;
4. on any failure or cancellation, :func:`discard` removes the temporary file
   (shielded, with its own short deadline).

Without guest-exec (blocked in qemu-ga's configuration) or without a POSIX
shell (Windows guests) none of this is possible: :func:`require_shell` says so,
and the only other way is writing the destination in place, which a caller
must ask for (``in_place=True``, ``gagent agent ... copy-to --in-place``).
"""

from __future__ import annotations

import trio

from .commands import AgentCommands
from .errors import AgentError, CommandUnavailable, GagentError, GuestIsFrozen, UsageError

__all__ = [
    "DISCARD_TIMEOUT",
    "GuestReplaceError",
    "discard",
    "make_temp",
    "put_in_place",
    "require_shell",
]

#: Seconds the removal of a failed copy's temporary file may take.
DISCARD_TIMEOUT = 5.0
#: Like qemu-ga's own spawn, find programs even when its environment has no PATH.
_PATH = ': "${PATH:=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"; '
#: $1 = GUEST_PATH.  Prints the file to replace and the new temporary file.
_MAKE_TEMP = _PATH + (
    'd=$1; if [ -L "$d" ]; then '
    'r=$(readlink -f "$d") && [ -n "$r" ] || { echo "$d is a symlink to nothing" >&2; exit 3; }; '
    "d=$r; fi; "
    'if [ -d "$d" ]; then echo "$d is a directory (give the file\'s path)" >&2; exit 3; fi; '
    'if [ -e "$d" ] && [ ! -f "$d" ]; then echo "$d is not a regular file" >&2; exit 3; fi; '
    "umask 077; "
    't=$(mktemp "${d%/*}/.$(printf \'%.100s\' "${d##*/}").gagent-XXXXXX") || exit 4; '
    'printf \'%s\\n%s\\n\' "$d" "$t"'
)
#: $1 = mode (octal), $2 = temporary file, $3 = destination.
_PUT_IN_PLACE = _PATH + (
    'if [ -e "$3" ]; then o=$(stat -c %u:%g "$3" 2>/dev/null) && chown "$o" "$2" 2>/dev/null; fi; '
    'chmod "$1" "$2" && exec mv -f "$2" "$3"'
)
_DISCARD = 'exec rm -f "$1"'
#: _MAKE_TEMP's exit code for a destination that cannot be replaced by a file.
_REFUSED = 3
#: exec-status polling: short first (these scripts take milliseconds), then backing off.
_POLL_FIRST, _POLL_MAX = 0.02, 0.5


class GuestReplaceError(AgentError):
    """A step of the atomic replacement failed in the guest; ``said`` is what its shell
    printed on stderr, ``exit_code`` how it ended (None: a signal)."""

    def __init__(self, step: str, said: str, exit_code: int | None, signal: int | None):
        self.said = said
        self.exit_code = exit_code
        how = f"exit {exit_code}" if signal is None else f"signal {signal}"
        super().__init__("guest-exec", "CopyFailed", f"{step} in the guest failed: {said} ({how})")


async def require_shell(agent: AgentCommands, guest_path: str) -> None:
    """Raise unless the guest can run the steps above (guest-exec and a POSIX shell)."""
    way_out = (
        "enable it in the guest's qemu-ga (--allow-rpcs, --block-rpcs or /etc/qemu/qemu-ga.conf), "
        "or write in place with --in-place (a failed copy then leaves a partial "
        "file, and a new file gets mode 0666)"
    )
    for command in ("guest-exec", "guest-exec-status"):
        try:
            await agent.require(command)
        except GuestIsFrozen:
            raise  # a frozen guest is not a configuration: its error names the thaw
        except CommandUnavailable as exc:
            raise CommandUnavailable(
                command,
                f"copying to {guest_path} atomically needs {command} (qemu-ga has no rename "
                f"or chmod), and the guest agent {_why(exc)}: {way_out}",
                agent_version=exc.agent_version,
            ) from None
    try:
        windows = (await agent.osinfo()).id == "mswindows"
    except (AgentError, CommandUnavailable):
        windows = False  # cannot tell: the shell will say if it is missing
    if windows:
        raise UsageError(
            f"copying to {guest_path} atomically needs a POSIX shell, which a Windows guest "
            "lacks: write it in place with --in-place"
        )


def _why(exc: CommandUnavailable) -> str:
    return "has it disabled" if "disabled" in exc.reason else "does not implement it"


async def make_temp(agent: AgentCommands, guest_path: str) -> tuple[str, str]:
    """(the file to replace, a new private temporary file beside it)."""
    try:
        out = await _shell(agent, "make-temp", _MAKE_TEMP, guest_path)
    except GuestReplaceError as exc:
        if exc.exit_code == _REFUSED:  # a directory, a device...: the caller's mistake
            raise UsageError(f"cannot copy to {guest_path}: {exc.said}") from None
        raise
    lines = out.split("\n")
    if len(lines) != 3 or lines[2] or not lines[0] or not lines[1]:
        raise GuestReplaceError("make-temp", f"unexpected output {out!r}", 0, None)
    return lines[0], lines[1]


async def put_in_place(agent: AgentCommands, temp: str, target: str, mode: int) -> None:
    """chmod the complete temporary file and rename it over ``target``."""
    await _shell(agent, "put-in-place", _PUT_IN_PLACE, f"{mode:04o}", temp, target)


async def discard(agent: AgentCommands, temp: str) -> None:
    """Remove ``temp`` even while being cancelled (bounded by DISCARD_TIMEOUT, never raises:
    a failure is already propagating)."""
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + DISCARD_TIMEOUT
        try:
            await _shell(agent, "discard", _DISCARD, temp)
        except GagentError:
            pass


async def _shell(agent: AgentCommands, step: str, script: str, *args: str) -> str:
    """Run ``script`` with ``args`` as $1... in the guest's /bin/sh; its stdout, or raise
    GuestReplaceError with its stderr.  The outputs are a few lines: the reply fits any
    route, so qemu-ga captures them (no files as gagent.programs needs for large ones)."""
    pid = await agent.exec("/bin/sh", ["-c", script, f"gagent-{step}", *args], capture_output=True)
    delay = _POLL_FIRST
    while not (status := await agent.exec_status(pid)).exited:
        await trio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
    if status.exit_code != 0:
        said = " ".join(status.stderr.decode(errors="replace").split()) or "no message"
        raise GuestReplaceError(step, said, status.exit_code, status.signal)
    return status.stdout.decode(errors="surrogateescape")

"""Running a program in the guest to completion: guest-exec, then guest-exec-status.

::

    async with gagent.open_agent(path) as agent:
        result = await run_program(agent, ["/usr/bin/uptime"])
        print(result.exit_code, result.stdout)

qemu-ga keeps up to 16 MiB of each of a program's stdout and stderr and hands
both over, base64-encoded, in the one guest-exec-status reply that reports the
exit: ~43 MiB at worst.  gagent's own channel takes such a reply
(``protocol.REPLY_SIZE_FLOORS``).  libvirt's relay does not: it reads at most
10 MiB of a reply, and past that it refuses the domain's agent until qemu-ga
reconnects, so a chatty program would cut libvirt (and its snapshots' quiesce)
off the guest.  On a route whose bound is too small for that reply
(``agent.max_reply_size``), a POSIX guest's program therefore writes its output
into two private files in the guest's /dev/shm (a tmpfs, which a freeze leaves
alone; else /tmp), which are read back in chunks that fit the bound and then
removed.  The result is the same :class:`ProgramResult`
(each stream cut at 16 MiB, as qemu-ga would); what differs is that a program
that cannot be started is reported by the guest's shell (exit code 126 or 127,
its message on stderr) instead of as an :class:`~gagent.errors.AgentError`.
Windows guests have no such shell: there qemu-ga captures the output as usual.

Timeouts are the caller's.  If the caller gives up, the program keeps running
in the guest (qemu-ga cannot kill it); its output files are removed anyway.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import trio

from .commands import AgentCommands
from .errors import AgentError, CommandUnavailable, GagentError, UsageError
from .protocol import REPLY_SIZE_FLOORS
from .transfer import CLOSE_TIMEOUT, close_guest_file, largest_read_chunk
from .types import ExecStatus

__all__ = ["OUTPUT_LIMIT", "ProgramResult", "run_program"]

#: Bytes of each output stream kept (qemu-ga's GUEST_EXEC_MAX_OUTPUT).
OUTPUT_LIMIT = 16 * 1024 * 1024
#: Reads of the output files: large, but a fraction of any route's bound.
_OUTPUT_CHUNK = 4 * 1024 * 1024
#: Where the output files go, first choice first: a tmpfs (never frozen by
#: guest-fsfreeze-freeze, so a program run while the guest is frozen does not
#: block on its own output), else /tmp.
_OUTPUT_DIRS = ("/dev/shm", "/tmp")
#: $0 is the files' name; noclobber refuses a file someone planted there.  A
#: caller's ``env`` without PATH still finds programs by name, as qemu-ga's own
#: spawn does (it searches its own PATH).
_REDIRECT = (
    ': "${PATH:=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"; '
    'umask 077; set -C; d=/dev/shm; [ -d "$d" ] && [ -w "$d" ] || d=/tmp; '
    'exec "$@" >"$d/$0.out" 2>"$d/$0.err"'
)


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """How a guest program ended.  ``exit_code`` is None if a signal killed it."""

    argv: tuple[str, ...]
    pid: int
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool

    @property
    def succeeded(self) -> bool:
        """Exit code 0 and no signal."""
        return self.exit_code == 0 and self.signal is None


async def run_program(
    agent: AgentCommands,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | Iterable[str] | None = None,
    capture_output: bool = True,
    poll_interval: float = 0.05,
    max_poll_interval: float = 1.0,
) -> ProgramResult:
    """Run ``argv`` in the guest, wait for it, return its result (see the module doc).

    guest-exec-status is polled, starting every ``poll_interval`` seconds and
    backing off to ``max_poll_interval``.  ``env`` replaces the environment.
    """
    if isinstance(argv, str | bytes) or not argv:
        raise UsageError("argv must be a non-empty list of strings (program first)")
    if poll_interval <= 0 or max_poll_interval < poll_interval:
        raise UsageError("need 0 < poll_interval <= max_poll_interval")
    argv = tuple(argv)
    polling = (poll_interval, max_poll_interval)
    if capture_output and _reply_may_not_fit(agent) and await _posix_guest(agent):
        return await _run_into_files(agent, argv, input, env, polling)
    pid = await agent.exec(
        argv[0], argv[1:], env=env, input_data=input, capture_output=capture_output
    )
    status = await _wait(agent, pid, polling)
    return ProgramResult(
        argv=argv,
        pid=pid,
        exit_code=status.exit_code,
        signal=status.signal,
        stdout=status.stdout,
        stderr=status.stderr,
        stdout_truncated=status.stdout_truncated,
        stderr_truncated=status.stderr_truncated,
    )


async def _wait(agent: AgentCommands, pid: int, polling: tuple[float, float]) -> ExecStatus:
    delay, longest = polling
    while True:
        status = await agent.exec_status(pid)
        if status.exited:
            return status
        await trio.sleep(delay)
        delay = min(delay * 1.5, longest)


def _reply_may_not_fit(agent: AgentCommands) -> bool:
    """The route cannot carry the largest guest-exec-status reply qemu-ga may send."""
    limit = agent.max_reply_size
    return limit is not None and limit < REPLY_SIZE_FLOORS["guest-exec-status"]


async def _posix_guest(agent: AgentCommands) -> bool:
    try:
        info = await agent.osinfo()
    except (AgentError, CommandUnavailable):
        return False  # cannot tell: leave the output to qemu-ga
    return info.id != "mswindows"


async def _run_into_files(
    agent: AgentCommands,
    argv: tuple[str, ...],
    input: bytes | None,
    env: Mapping[str, str] | Iterable[str] | None,
    polling: tuple[float, float],
) -> ProgramResult:
    name = f".gagent-exec-{secrets.token_hex(12)}"
    pid = await agent.exec("/bin/sh", ["-c", _REDIRECT, name, *argv], env=env, input_data=input)
    try:
        status = await _wait(agent, pid, polling)
        stdout, stdout_cut = await _read_output(agent, f"{name}.out")
        stderr, stderr_cut = await _read_output(agent, f"{name}.err")
    finally:
        paths = [f"{d}/{name}.{kind}" for d in _OUTPUT_DIRS for kind in ("out", "err")]
        await _remove(agent, paths, polling)
    return ProgramResult(
        argv=argv,
        pid=pid,
        exit_code=status.exit_code,
        signal=status.signal,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=stdout_cut,
        stderr_truncated=stderr_cut,
    )


async def _read_output(agent: AgentCommands, name: str) -> tuple[bytes, bool]:
    """The first OUTPUT_LIMIT bytes of an output file, and whether there was more."""
    for directory in _OUTPUT_DIRS:
        try:
            handle = await agent.file_open(f"{directory}/{name}", "r")
            break
        except AgentError:
            continue
    else:
        return b"", False  # the shell could not create it: its exit code says so
    data = bytearray()
    try:
        chunk = largest_read_chunk(agent, _OUTPUT_CHUNK)
        while len(data) <= OUTPUT_LIMIT:
            block = await agent.file_read(handle, min(chunk, OUTPUT_LIMIT + 1 - len(data)))
            data += block.data
            if block.eof or not block.data:
                break
    finally:
        await close_guest_file(agent, handle, strict=False)
    return bytes(data[:OUTPUT_LIMIT]), len(data) > OUTPUT_LIMIT


async def _remove(agent: AgentCommands, paths: list[str], polling: tuple[float, float]) -> None:
    """Remove the output files, even when the caller is giving up (bounded, never raises)."""
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + CLOSE_TIMEOUT
        try:
            pid = await agent.exec("/bin/rm", ["-f", *paths])
            await _wait(agent, pid, polling)
        except GagentError:
            pass  # a failure is already propagating, or the agent is gone with the files

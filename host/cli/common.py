"""What every CLI command shares: running trio under a deadline and signals, printing results.

trio is imported by :func:`run_command` only: a one-shot command that the
blocking client serves (:func:`run_blocking_command`) never loads it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from gagent.errors import GagentError, UsageError
from gagent.inflight import collecting

from .render import dumps, render

T = TypeVar("T")

#: Signals that end a command the way Ctrl-C does: systemd stopping a unit
#: (SIGTERM), a dropped ssh session (SIGHUP), timeout(1) (SIGTERM).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """A stop signal ended the command (after its shielded cleanup ran)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class CommandTimeout(GagentError):
    """The command's overall deadline (``--timeout``) passed."""

    def __init__(self, seconds: float, target: str, waits: Sequence[str] = ()):
        self.seconds = seconds
        self.target = target
        #: The waits cancelled meanwhile (gagent.inflight): the deadline cut the last one.
        self.waits = list(waits)
        said = f"timed out after {seconds:g}s waiting for {target}"
        if not waits:
            super().__init__(
                f"{said} (is it answering? libvirtd, the agent in the guest, or the remote "
                "host; raise --timeout for slow operations)"
            )
            return
        who = "libvirtd" if waits[-1].startswith("libvirt") else "the agent in the guest"
        super().__init__(
            f"{said}: still waiting for {waits[-1]} (is {who} answering? raise --timeout "
            "if it is only slow)"
        )


def run_command(func: Callable[[], Awaitable[T]], *, seconds: float | None, target: str) -> T:
    """trio.run ``func`` under the command's overall deadline (None or 0: none).

    SIGINT, SIGTERM and SIGHUP cancel ``func`` (its shielded cleanup, a thaw,
    runs to its own deadline); a second signal does not cut that cleanup short.
    Then :class:`Interrupted` is raised, unless ``func`` ended with an error of
    its own, which wins (it says more: a thaw that could not be confirmed).
    A deadline that passes becomes :class:`CommandTimeout`.
    """
    import trio

    async def main() -> T:
        received: list[int] = []
        result: list[T] = []
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                work_scope = trio.CancelScope()

                async def work() -> None:
                    try:
                        with work_scope:
                            result.append(await _bounded(func, seconds, target))
                    except (CommandTimeout, trio.TooSlowError) as exc:
                        _raise_any_unconfirmed_thaw(exc)
                        raise
                    finally:
                        nursery.cancel_scope.cancel()  # stop listening for signals

                nursery.start_soon(work)
                async for signum in signals:
                    if received:
                        say("gagent: still finishing: a pending thaw runs to its own deadline")
                        continue
                    received.append(signum)
                    work_scope.cancel()
        if received and not result:
            interrupted = Interrupted(received[0])
            _raise_any_unconfirmed_thaw(interrupted)
            raise interrupted
        return result[0]

    return trio.run(main)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the block (once).

    For the blocking path (commands that change nothing in the guest): the
    signal ends the command where it is, its ``with`` blocks close what they
    opened, and :func:`gagent.host.cli.main` says so with the signal's exit code
    as :func:`run_command` does.  Signal handlers belong to the main thread: in
    another, the block runs with the process's own handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if not received:  # a second signal must not cut the way out short
            received.append(signum)
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_any_unconfirmed_thaw(cause: BaseException) -> None:
    """A thaw that could not be confirmed outranks the timeout or signal that ended the
    command: the operator must read THE GUEST MAY STILL BE FROZEN and its command (exit 9)."""
    from gagent.freeze import unconfirmed_thaws

    pending = unconfirmed_thaws()
    if pending:
        raise pending[0] from cause


async def _bounded(func: Callable[[], Awaitable[T]], seconds: float | None, target: str) -> T:
    with deadline_of(seconds, target):
        return await func()


@contextmanager
def deadline_of(seconds: float | None, target: str) -> Iterator[None]:
    """``trio.fail_after(seconds)`` (None or 0: none) whose passing is a
    :class:`CommandTimeout` naming ``target`` and the wait it cut (gagent.inflight).
    An inner deadline's TooSlowError goes through unchanged."""
    import trio

    if not seconds:
        yield
        return
    deadline = trio.current_time() + seconds
    with collecting() as waits:  # what this deadline cuts, not what an inner one did
        try:
            with trio.fail_after(seconds):
                yield
        except trio.TooSlowError:
            if trio.current_time() >= deadline:
                raise CommandTimeout(seconds, target, waits) from None
            raise


def say(line: str) -> None:
    """One line on stderr; nothing when stderr is gone (a dropped ssh session)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass  # the terminal is gone (a dropped ssh session): nothing to tell


@dataclass
class Output:
    as_json: bool

    def emit(self, value: Any, human: Callable[[Any], str] | None = None) -> None:
        if self.as_json:
            click.echo(dumps(value))
        else:
            click.echo((human or render)(value))


def parse_json_object(text: str | None, what: str) -> dict[str, Any] | None:
    """Parse the JSON arguments of ``call``; a clear UsageError when malformed."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object like '{{\"key\": 1}}', not {text!r}")
    return value


def parse_call(name: str, json_args: str | None) -> tuple[str, dict[str, Any] | None]:
    """(command, arguments) of ``call NAME [JSON-ARGS]``, or of ``call REQUEST``: a whole
    ``{"execute": NAME, "arguments": {...}}`` as virsh qemu-agent-command takes it."""
    if not name.lstrip().startswith("{"):
        return name, parse_json_object(json_args, "JSON-ARGS")
    request = parse_json_object(name, "REQUEST")
    assert request is not None
    if json_args is not None:
        raise UsageError('give the arguments inside the request\'s "arguments", not after it')
    extra = sorted(set(request) - {"execute", "arguments"})
    if extra:
        raise UsageError(f'a request has only "execute" and "arguments", not {", ".join(extra)}')
    command = request.get("execute")
    if not isinstance(command, str) or not command:
        raise UsageError('a request names its command: {"execute": "guest-ping"}')
    arguments = request.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise UsageError(f'"arguments" must be a JSON object, not {json.dumps(arguments)}')
    return command, arguments

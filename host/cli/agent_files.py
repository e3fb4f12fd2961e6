"""``gagent agent``'s commands that move data: ``exec`` (a program's output) and the
copies (``copy-to``, ``copy-from``), with their progress (a line on a terminal, JSON
lines on stderr with ``--json``: :mod:`.progress`).

Registered on :data:`~.agent.agent_group` when imported; :mod:`.admin` (the module the
CLI loads for ``gagent agent``) imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from gagent.errors import UsageError

from .agent import LONG_TIMEOUT, AgentOptions, agent_group, pass_options
from .options import json_option
from .progress import Progress

__all__ = ["copy_from", "copy_to", "exec_"]


# Options go before ARGV: every word from the program on is the program's own
# ('exec ls --json' runs 'ls --json'; 'exec --json ls' prints JSON).
@agent_group.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--input", "input_file", type=click.File("rb"), help="Feed this file to stdin.")
@json_option(
    "Print the result as JSON (exit code, signal, stdout and stderr in base64); before ARGV."
)
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_options
def exec_(options: AgentOptions, input_file: Any, as_json: bool, argv: tuple[str, ...]) -> int:
    """Run ARGV in the guest, print its output, exit with its exit code."""
    from gagent import programs

    if as_json:  # as --json before the command
        options.output.as_json = True
    data = input_file.read() if input_file else None
    result = options.run(
        lambda agent: programs.run_program(agent, list(argv), input=data),
        default_timeout=LONG_TIMEOUT,
    )
    if options.output.as_json:
        options.output.emit(result)
    else:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
        # on a line of its own, whatever the program's stderr ended with
        lead = "\n" if result.stderr and not result.stderr.endswith(b"\n") else ""
        for stream, cut in (
            ("stdout", result.stdout_truncated),
            ("stderr", result.stderr_truncated),
        ):
            if cut:  # never pass a cut output off as the whole of it
                print(
                    f"{lead}gagent: warning: the guest kept only the first "
                    f"{programs.OUTPUT_LIMIT // (1024 * 1024)} MiB of the program's {stream}: "
                    "redirect it to a file in the guest and fetch that with copy-from",
                    file=sys.stderr,
                )
                lead = ""
    if result.exit_code is not None:
        return result.exit_code
    return 128 + (result.signal or 0)


def _copy(options: AgentOptions, label: str, copy: Callable[..., Awaitable[int]]) -> int:
    # a line on a terminal (always ended), JSON lines with --json, else nothing
    with Progress(label, as_json=options.output.as_json) as progress:
        shown = progress if progress.enabled else None
        return options.run(lambda agent: copy(agent, progress=shown), default_timeout=LONG_TIMEOUT)


def _octal_mode(text: str | None) -> int | None:
    if text is None:
        return None
    digits = text.removeprefix("0o")
    if not digits or any(c not in "01234567" for c in digits) or int(digits, 8) > 0o7777:
        raise UsageError(f"--mode wants octal permission bits such as 0644 or 755, not {text!r}")
    return int(digits, 8)


@agent_group.command("copy-to")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.argument("guest_path")
@click.option(
    "--mode",
    "mode_text",
    metavar="OCTAL",
    # gagent.transfer.DEFAULT_MODE (a test holds them equal; importing it loads trio)
    help="Permission bits of GUEST_PATH (default 0644).",
)
@click.option(
    "--in-place",
    is_flag=True,
    help="Write GUEST_PATH directly (when the guest blocks guest-exec): a failed copy then "
    "leaves it partial, and a new file gets qemu-ga's mode 0666 (no --mode).",
)
@pass_options
def copy_to(
    options: AgentOptions, local: str, guest_path: str, mode_text: str | None, in_place: bool
) -> None:
    """Copy LOCAL (- for standard input) into the guest as GUEST_PATH.

    GUEST_PATH (absolute) changes only once the copy is complete: the data goes
    into a temporary file beside it, which is renamed over it at the end; on any
    failure it is removed and the old file stays.  Renaming and setting the mode
    run the guest's mv and chmod through guest-exec: a guest that blocks it
    refuses the copy (exit 5) unless --in-place is given.
    """
    from gagent import transfer

    mode = _octal_mode(mode_text)
    source = sys.stdin.buffer if local == "-" else local
    count = _copy(
        options,
        "copy-to",
        lambda agent, progress: transfer.copy_to_guest(
            agent, source, guest_path, mode=mode, in_place=in_place, progress=progress
        ),
    )
    options.output.emit({"bytes": count, "to": guest_path}, lambda v: f"copied {v['bytes']} bytes")


@agent_group.command("copy-from")
@click.argument("guest_path")
@click.argument("local", type=click.Path(dir_okay=False, allow_dash=True))
@pass_options
def copy_from(options: AgentOptions, guest_path: str, local: str) -> None:
    """Copy GUEST_PATH out of the guest into LOCAL (- for standard output).

    LOCAL changes only once the copy is complete (a temporary file beside it,
    renamed over it).  A symlink is written through to the regular file it
    names; anything else that is not a regular file (a FIFO, a device) is
    refused, never replaced.
    """
    from gagent import transfer

    to_stdout = local == "-"
    target = sys.stdout.buffer if to_stdout else local
    count = _copy(
        options,
        "copy-from",
        lambda agent, progress: transfer.copy_from_guest(
            agent, guest_path, target, progress=progress
        ),
    )
    if not to_stdout:  # standard output carries the file itself
        options.output.emit({"bytes": count, "to": local}, lambda v: f"copied {v['bytes']} bytes")

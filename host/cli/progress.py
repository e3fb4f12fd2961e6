"""What gagent shows of a long command on stderr: its progress, and colour.

:class:`Progress` is the one progress helper; it decides what is shown:

* with ``--json``: JSON lines on stderr, one object per line
  (``{"event": "progress", "what": ..., "done": N, "total": N|null, "unit": ...}``
  plus the command's own counts), at most :data:`JSON_PER_SECOND` a second, and the
  last state always (stdout keeps the command's one JSON result);
* else on a terminal: click's progress bar (percent, ETA) fed absolute counts
  in human units (``1.2 MiB of 2.9 MiB``), ended by a newline whatever
  happened (also after a failure, whose message then starts on a line of its own);
* else (a pipe, a log, cron): nothing at all.

:func:`style`: colour only on a terminal, and never when ``NO_COLOR`` is set to a
non-empty value (https://no-color.org: an empty ``NO_COLOR=`` leaves colour on).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import click

from .render import human_bytes

__all__ = ["JSON_PER_SECOND", "Progress", "colour_on", "human_count", "style"]

#: The most progress events a second with --json (the last state is always written).
JSON_PER_SECOND = 4


def human_count(count: int | None) -> str:
    return "?" if count is None else str(count)


class Progress:
    """A command's progress on ``stream`` (default stderr): JSON lines with ``as_json``,
    else a self-rewriting line if ``stream`` is a terminal, else nothing.

    ``progress(done, total, note, **counts)`` reports ``done`` of ``total``
    (None: unknown) in ``unit`` (``"bytes"`` shows as KiB, MiB...; any other unit
    as a count); the bar shows ``note`` after them, a JSON event carries
    ``counts`` instead.  :meth:`finish` (or leaving the ``with`` block) ends the
    line, or writes the last event if the rate limit held it back.
    """

    def __init__(
        self,
        label: str,
        *,
        unit: str = "bytes",
        as_json: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label = label
        self.unit = unit
        self.human = human_bytes if unit == "bytes" else human_count
        self.stream = stream if stream is not None else sys.stderr
        self.as_json = as_json
        self.enabled = as_json or _isatty(self.stream)
        self._bar: Any = None
        self._clock = clock
        self._written_at: float | None = None  # when the last JSON event was written
        self._held: dict[str, Any] | None = None  # an event the rate limit held back

    def __call__(self, done: int, total: int | None = None, note: str = "", **counts: Any) -> None:
        if not self.enabled:
            return
        if self.as_json:
            self._event(done, total, counts)
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=max(total or 0, 1),
                label=self.label,
                show_eta=True,
                show_percent=True,
                show_pos=False,
                item_show_func=lambda text: text,
                file=self.stream,
                width=20,
                color=colour_on(self.stream),
            )
            self._bar.__enter__()
        self._bar.length = total or None  # unknown: a bar without percent or ETA
        shown = f"{self.human(done)} of {self.human(total)}" if total else self.human(done)
        self._bar.update(done - self._bar.pos, ", ".join(filter(None, [shown, note])))

    def _event(self, done: int, total: int | None, counts: dict[str, Any]) -> None:
        event = {"event": "progress", "what": self.label, "done": done, "total": total,
                 "unit": self.unit, **counts}  # fmt: skip
        now = self._clock()
        if self._written_at is not None and now - self._written_at < 1 / JSON_PER_SECOND:
            self._held = event
            return
        self._written_at, self._held = now, None
        self._write(event)

    def _write(self, event: dict[str, Any]) -> None:
        try:
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()
        except OSError:
            pass  # stderr is gone (a dropped session): the command goes on

    def finish(self) -> None:
        """End the line (a newline) if one was drawn; write the event held back, if any."""
        held, self._held = self._held, None
        if held is not None:
            self._write(held)
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.__exit__(None, None, None)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no such method, or closed
        return False


def colour_on(stream: Any = None) -> bool:
    """Whether colour may be written to ``stream`` (default stdout)."""
    if os.environ.get("NO_COLOR"):  # "present and not an empty string" (no-color.org)
        return False
    return _isatty(sys.stdout if stream is None else stream)


def style(text: str, stream: Any = None, **styles: Any) -> str:
    """``text`` in click's ``styles`` (fg=..., bold=...) when :func:`colour_on`, else as is."""
    return click.style(text, **styles) if colour_on(stream) else text

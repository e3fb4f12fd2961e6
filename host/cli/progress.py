"""What gagent draws on a terminal: one progress line, and colour.

:class:`Progress` is click's progress bar (percent, ETA) fed absolute counts
with their human units (``1.2 MiB of 2.9 MiB``): on stderr, only when stderr
is a terminal, ended by a newline whatever happened (also after a failure,
whose message then starts on a line of its own).  Not a terminal (a pipe, a
log, cron): nothing is drawn at all.

:func:`style`: colour only on a terminal, and never when ``NO_COLOR`` is set
(https://no-color.org).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import click

from .render import human_bytes

__all__ = ["Progress", "colour_on", "human_count", "style"]


def human_count(count: int | None) -> str:
    return "?" if count is None else str(count)


class Progress:
    """One self-rewriting progress line on ``stream`` (default stderr), if it is a terminal.

    ``progress(done, total, note)`` shows ``done`` of ``total`` (None: unknown)
    in ``human`` units, then ``note``; :meth:`finish` (or leaving the ``with``
    block) ends the line.
    """

    def __init__(
        self,
        label: str,
        *,
        human: Callable[[int | None], str] = human_bytes,
        stream: TextIO | None = None,
    ):
        self.label = label
        self.human = human
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self._bar: Any = None

    def __call__(self, done: int, total: int | None = None, note: str = "") -> None:
        if not self.enabled:
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

    def finish(self) -> None:
        """End the line (a newline), if one was drawn."""
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
    if os.environ.get("NO_COLOR"):
        return False
    return _isatty(sys.stdout if stream is None else stream)


def style(text: str, stream: Any = None, **styles: Any) -> str:
    """``text`` in click's ``styles`` (fg=..., bold=...) when :func:`colour_on`, else as is."""
    return click.style(text, **styles) if colour_on(stream) else text

"""What a command was still waiting on when its deadline cancelled it.

A ``--timeout`` that passes should say *what* did not answer: libvirtd (which
call), or the agent (which reply).  The places that wait on another party note
it only when they are cancelled (:func:`note_cancelled_wait`), so the waits that
end normally cost nothing; the CLI's ``run_command`` collects the notes of one
command (:func:`collecting`) and its timeout line names the last one cut: the
command's own deadline cuts last (an inner deadline that was handled cut earlier).

A note is kept only while collecting: library callers without it see no change.
Standard library only (the blocking API and the trio client both use it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["collecting", "note_cancelled_wait"]

# A list shared by every task of the command: trio copies the context into each
# task it starts, and the copy refers to this same list.
_notes: ContextVar[list[str] | None] = ContextVar("gagent_cancelled_waits", default=None)


def note_cancelled_wait(what: str) -> None:
    """Record that a wait for ``what`` (``"libvirt's getHostname"``...) was cancelled."""
    notes = _notes.get()
    if notes is not None:
        if what in notes:
            notes.remove(what)  # cut again: it moves to the end
        notes.append(what)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """The notes of the cancelled waits inside the block, in the order they were last cut."""
    notes: list[str] = []
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)

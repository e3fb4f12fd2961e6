"""How gagent waits for libvirt's blocking calls: in a trio worker thread
(:func:`in_thread`), or, for callers without trio, in a daemon thread bounded by a
deadline (:func:`within`).

libvirt cannot be interrupted, so either way a caller whose time is up moves on
and the thread ends by itself.  No libvirt in it (only ``host/virt_calls.py``
imports libvirt, which re-exports these); trio is imported on first use, so the
blocking domain route of gagent.sync never loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from gagent.inflight import note_cancelled_wait

__all__ = ["in_thread", "within"]

T = TypeVar("T")


def within(seconds: float | None, func: Callable[[], T], doing: str) -> T:
    """``func()`` (blocking libvirt calls) in a daemon thread, waited for at most ``seconds``
    (None: no bound): libvirt cannot be interrupted, so a caller without trio moves on at
    its deadline with :class:`gagent.sync.AgentTimeout` and the thread ends by itself."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name=f"gagent: {doing}", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        from gagent.sync import AgentTimeout  # on a timeout only: the import costs

        raise AgentTimeout(
            f"libvirt did not answer within {seconds:.3g}s ({doing})", f"libvirt ({doing})"
        )
    ok, value = outcome[0]
    if ok:
        return value
    raise value


async def in_thread(run: Callable[[], T], *, doing: str, abandon_on_cancel: bool = True) -> T:
    """``run()`` in a trio worker thread.  trio is imported here, on first use: the
    blocking callers of this module (gagent.sync's domain route) never load it.

    Cancelled while libvirt has not answered, it notes ``doing`` for the timeout's
    line (:mod:`gagent.inflight`)."""
    import trio

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=abandon_on_cancel)
    except trio.Cancelled:
        note_cancelled_wait(f"libvirt ({doing})")
        raise

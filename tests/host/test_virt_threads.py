"""gagent.host.virt_threads: blocking calls waited for in a thread, bounded, with no libvirt."""

from __future__ import annotations

import threading

import pytest
import trio

from gagent.host.virt_threads import in_thread, within
from gagent.inflight import collecting
from gagent.sync import AgentTimeout

TIMEOUT = 30  # seconds: a bound for the waits, never a speed target


def test_within_returns_the_value_or_raises_the_error_in_the_callers_thread():
    assert within(TIMEOUT, lambda: 42, "answering") == 42

    def refuse() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        within(TIMEOUT, refuse, "refusing")


def test_within_moves_on_at_its_deadline_and_says_what_did_not_answer():
    release = threading.Event()
    try:
        with pytest.raises(AgentTimeout, match=r"libvirt did not answer .* \(hanging\)") as caught:
            within(0.05, lambda: release.wait(TIMEOUT), "hanging")
        assert caught.value.waiting_for == "libvirt (hanging)"
    finally:
        release.set()  # the abandoned thread ends now


async def test_in_thread_notes_the_call_a_cancellation_cut():
    release = threading.Event()
    assert await in_thread(lambda: 7, doing="answering") == 7
    try:
        with collecting() as notes, trio.move_on_after(0.05) as scope:
            await in_thread(lambda: release.wait(TIMEOUT), doing="hanging")
    finally:
        release.set()
    assert scope.cancelled_caught
    assert notes == ["libvirt (hanging)"]

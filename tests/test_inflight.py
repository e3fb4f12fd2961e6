"""gagent.inflight: which wait a deadline cut, noted only while a command collects."""

from __future__ import annotations

import trio

from gagent.client import open_agent
from gagent.inflight import collecting, note_cancelled_wait


def test_nothing_is_kept_outside_collecting():
    note_cancelled_wait("libvirt (getHostname)")  # no list: nothing to keep, no error
    with collecting() as notes:
        assert notes == []
        note_cancelled_wait("a")
        note_cancelled_wait("b")
        note_cancelled_wait("a")  # cut again: the latest cut is last
        assert notes == ["b", "a"]
    with collecting() as fresh:
        assert fresh == []


async def test_the_trio_client_notes_the_reply_it_was_waiting_for(silent_unix_socket):
    with collecting() as notes:
        with trio.move_on_after(0.3) as scope:
            async with open_agent(silent_unix_socket, sync=False) as agent:
                await agent.execute("guest-info")
    assert scope.cancelled_caught
    assert len(notes) == 1 and notes[0].endswith("to guest-sync-delimited"), notes
    assert str(silent_unix_socket) in notes[0]


async def test_a_wait_that_ends_normally_is_not_noted(qemu_ga):
    with collecting() as notes:
        async with open_agent(qemu_ga.socket_path) as agent:
            await agent.ping()
    assert notes == []

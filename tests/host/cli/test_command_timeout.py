"""--timeout's one line names what did not answer: libvirt's call or the agent's reply
(host/cli/common.py CommandTimeout, fed by gagent.inflight)."""

from __future__ import annotations

import threading

import pytest
import trio

from gagent.client import open_agent
from gagent.host.cli import main
from gagent.host.cli.common import CommandTimeout
from gagent.host.cli.common import run_command as run_in_nursery
from gagent.host.virt_calls import call


def run_command(*args, **kwargs):
    """run_command, with its nursery's group of one unwrapped (as gagent's main does)."""
    try:
        return run_in_nursery(*args, **kwargs)
    except BaseExceptionGroup as group:
        while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
            group = group.exceptions[0]
        raise group from None


def test_a_libvirt_call_that_never_returns_is_named():
    release = threading.Event()

    def hung_libvirtd() -> str:  # as a blocking libvirt call on a SIGSTOPped libvirtd
        release.wait(30)
        return "late"

    async def work() -> str:
        return await call(hung_libvirtd, doing="getHostname")

    try:
        with pytest.raises(CommandTimeout) as info:
            run_command(work, seconds=0.3, target="libvirt at test:///default")
    finally:
        release.set()
    message = str(info.value)
    assert message.startswith("timed out after 0.3s waiting for libvirt at test:///default: ")
    assert "still waiting for libvirt (getHostname) (is libvirtd answering?" in message


def test_the_last_wait_cut_is_named_not_one_an_inner_deadline_handled(silent_unix_socket):
    release = threading.Event()

    async def work() -> None:
        with trio.move_on_after(0.2):  # handled: the command goes on
            await call(lambda: release.wait(30), doing="getHostname")
        async with open_agent(silent_unix_socket, sync=False) as agent:
            await agent.ping()

    try:
        with pytest.raises(CommandTimeout) as info:
            run_command(work, seconds=1.0, target="domain vm1")
    finally:
        release.set()
    assert info.value.waits[0] == "libvirt (getHostname)"
    assert info.value.waits[-1].endswith("to guest-sync-delimited")
    assert "(is the agent in the guest answering?" in str(info.value)


def test_without_a_note_the_line_stays_general():
    async def work() -> None:
        await trio.sleep(30)

    with pytest.raises(CommandTimeout) as info:
        run_command(work, seconds=0.1, target="domain vm1")
    assert info.value.waits == []
    assert "(is it answering? libvirtd, the agent in the guest, or the remote host" in str(
        info.value
    )


def test_the_blocking_route_names_the_reply_too(capsys, silent_unix_socket):
    code = main(["agent", "--socket", str(silent_unix_socket), "--timeout", "0.5", "info"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert err == (
        f"gagent: error: timed out after 0.5s waiting for {silent_unix_socket}: still waiting for "
        f"the reply of {silent_unix_socket} to guest-sync-delimited (is the agent in the guest "
        "answering? raise --timeout if it is only slow)\n"
    )

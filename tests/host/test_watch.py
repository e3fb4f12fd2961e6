"""gagent.host.watch (and virt.watch_events) against libvirt's test driver.

Found while writing these: the test driver delivers lifecycle events to every
connection of test:///default in the process (the state is shared), so a
change made from another connection is seen; test:///PATH.xml connections
each have a private state, so there the change is made on the watching
connection itself.  The test driver keeps no channel ``state`` attribute in
the live XML: channel states read 'unknown' (choose_route's tests cover
connected/disconnected from XML strings).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import libvirt
import pytest
import trio
from libvirt_domains import domain_xml

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.virt import (
    DEFAULT_URI,
    DomainEvent,
    DomainNotFound,
    Hypervisor,
    open_hypervisor,
    watch_events,
)
from gagent.host.watch import ChangeEvent, channel_states, watch

TIMEOUT = 10

CHANNELS = (
    f"<channel type='unix'><source mode='bind' path='/run/gagent-test.sock'/>"
    f"<target type='virtio' name='{GAGENT_CHANNEL}'/></channel>"
    f"<channel type='unix'><source mode='bind' path='/run/gagent-test.agent'/>"
    f"<target type='virtio' name='{LIBVIRT_AGENT_CHANNEL}'/></channel>"
    "<channel type='pty'><target type='guestfwd' address='10.0.2.1' port='4600'/></channel>"
)


async def wait_for(
    receive: trio.MemoryReceiveChannel, seen: list, match, *, since: int = 0, seconds: float = 5
) -> ChangeEvent:
    """The first event in ``seen[since:]`` or received next (kept in ``seen``) that
    matches: events from polling and from libvirt's thread arrive in either order."""
    for event in seen[since:]:
        if match(event):
            return event
    with trio.fail_after(seconds):
        async for event in receive:
            seen.append(event)
            if match(event):
                return event
    raise AssertionError("channel closed")


async def until_registered(dom: libvirt.virDomain, receive, seen) -> None:
    """watch() registers for events in a thread: pause and resume until libvirt reports it."""
    with trio.fail_after(5):
        while True:
            dom.suspend()
            dom.resume()
            with trio.move_on_after(0.1):
                await wait_for(receive, seen, lambda e: e.subject == "lifecycle", since=len(seen))
                return


@asynccontextmanager
async def watching(name: str) -> AsyncIterator[tuple[trio.MemoryReceiveChannel, list]]:
    """watch() of ``name`` on test:///default, started (nursery.start: nothing that
    follows can be missed) and running until the block ends: (receive, seen)."""
    hv = await open_hypervisor(DEFAULT_URI, events=True)
    send, receive = trio.open_memory_channel[ChangeEvent](256)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(watch, hv, send, name, poll_interval=0.05))
            yield receive, []
            nursery.cancel_scope.cancel()
    finally:
        await hv.close()


def lifecycle(domain: str, detail: str):
    return lambda e: (e.domain, e.subject, e.new) == (domain, "lifecycle", detail)


# --------------------------------------------------------------- channel_states


async def test_channel_states_of_running_and_stopped_domains(conn, make_domain):
    name = make_domain(CHANNELS)
    hv = await open_hypervisor(DEFAULT_URI)
    try:
        with trio.fail_after(TIMEOUT):
            dom = await hv.lookup(name)
            # virtio channels only (not guestfwd); the test driver reports no state
            assert await channel_states(dom) == {
                GAGENT_CHANNEL: "unknown",
                LIBVIRT_AGENT_CHANNEL: "unknown",
            }
            conn.lookupByName(name).destroy()
            assert await channel_states(dom) == {}
            assert await channel_states(await hv.lookup("test")) == {}
    finally:
        await hv.close()


# ------------------------------------------------------------------------ watch


async def test_watch_sees_lifecycle_and_channels_changed_from_another_connection(conn, make_domain):
    name = make_domain(CHANNELS)
    other = make_domain(CHANNELS)
    raw = conn.lookupByName(name)  # conn is not the watching connection
    with trio.fail_after(TIMEOUT):
        async with watching(name) as (receive, seen):
            # changes to another domain are not reported when watching one
            conn.lookupByName(other).destroy()
            conn.lookupByName(other).create()

            mark = len(seen)
            raw.destroy()
            await wait_for(receive, seen, lifecycle(name, "stopped"), since=mark)
            gone = await wait_for(receive, seen, lambda e: e.subject == GAGENT_CHANNEL, since=mark)
            assert (gone.old, gone.new) == ("unknown", "gone")

            mark = len(seen)
            raw.create()
            await wait_for(receive, seen, lifecycle(name, "started"), since=mark)
            back = await wait_for(receive, seen, lambda e: e.subject == GAGENT_CHANNEL, since=mark)
            assert (back.old, back.new) == (None, "unknown")
    assert {e.domain for e in seen} == {name}
    assert any(e.subject == LIBVIRT_AGENT_CHANNEL and e.new == "gone" for e in seen)
    assert not any(e.subject == "lifecycle" and e.old is not None for e in seen)
    assert str(gone).endswith(f" {name} {GAGENT_CHANNEL}: unknown -> gone")
    assert str(back).endswith(f" {name} {GAGENT_CHANNEL}: unknown")


async def test_watch_started_misses_nothing_that_follows(conn, make_domain):
    """Under nursery.start(), watch() returns once events are registered and the
    baseline is taken: a change made at once is reported both ways."""
    name = make_domain(CHANNELS)
    with trio.fail_after(TIMEOUT):
        async with watching(name) as (receive, seen):
            conn.lookupByName(name).destroy()  # no until_registered(): nothing to wait for
            await wait_for(receive, seen, lifecycle(name, "stopped"))
            gone = await wait_for(receive, seen, lambda e: e.subject == GAGENT_CHANNEL)
            assert (gone.old, gone.new) == ("unknown", "gone")


async def test_watch_all_domains_on_a_private_node_file(tmp_path):
    """test:///PATH.xml: each connection has its own state, so change it through the
    watching connection itself (libvirt delivers the events to it as well)."""
    node = tmp_path / "node.xml"
    node.write_text(f"<node>{domain_xml('vm1', CHANNELS)}{domain_xml('vm2')}</node>")
    hv = await open_hypervisor(f"test://{node}", events=True)
    send, receive = trio.open_memory_channel[ChangeEvent](256)
    seen: list[ChangeEvent] = []
    try:
        raw = hv.conn.lookupByName("vm1")
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(watch, hv, send, poll_interval=0.05))
                await until_registered(raw, receive, seen)
                raw.destroy()
                await wait_for(receive, seen, lifecycle("vm1", "stopped"))
                hv.conn.lookupByName("vm2").destroy()
                await wait_for(receive, seen, lifecycle("vm2", "stopped"))
                hv.conn.defineXML(domain_xml("vm3"))
                await wait_for(receive, seen, lifecycle("vm3", "defined"))
                nursery.cancel_scope.cancel()
    finally:
        await hv.close()


async def test_watch_unknown_domain_fails_at_once():
    hv = await open_hypervisor(DEFAULT_URI, events=True)
    send, _receive = trio.open_memory_channel[ChangeEvent](1)
    try:
        with trio.fail_after(TIMEOUT), pytest.raises(DomainNotFound):
            await watch(hv, send, "gagent-no-such-domain")
    finally:
        await hv.close()


async def test_watch_first_look_is_only_a_baseline(make_domain):
    name = make_domain(CHANNELS)
    hv = await open_hypervisor(DEFAULT_URI, events=True)
    send, receive = trio.open_memory_channel[ChangeEvent](256)
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(watch, hv, send, name, poll_interval=0.02))
                with trio.move_on_after(0.3):
                    event = await receive.receive()
                    pytest.fail(f"nothing changed, yet: {event}")
                nursery.cancel_scope.cancel()
    finally:
        await hv.close()


# ----------------------------------------------------------------- watch_events


async def test_watch_events_reports_definitions_from_another_connection(conn):
    name = f"gagent-watch-{uuid.uuid4().hex[:10]}"
    hv = await open_hypervisor(DEFAULT_URI, events=True)
    send, receive = trio.open_memory_channel[DomainEvent](256)
    seen: list[DomainEvent] = []
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_events, hv, send)
                # registration happens in a thread: define/undefine until it is seen
                with trio.fail_after(5):
                    while not any(e.domain == name for e in seen):
                        conn.defineXML(domain_xml(name)).undefine()
                        with trio.move_on_after(0.1):
                            seen.append(await receive.receive())
                conn.defineXML(domain_xml(name))
                conn.lookupByName(name).undefine()
                while seen[-2:] != [
                    DomainEvent(name, "lifecycle", "defined"),
                    DomainEvent(name, "lifecycle", "undefined"),
                ]:
                    seen.append(await receive.receive())
                nursery.cancel_scope.cancel()
    finally:
        await hv.close()


async def test_watch_all_survives_a_domain_vanishing_after_listing(conn, monkeypatch):
    """The race made deterministic: the real listing, then the domain is destroyed
    (through another real connection) before watch() looks at it."""
    name = f"gagent-watch-{uuid.uuid4().hex[:10]}"
    conn.createXML(domain_xml(name, CHANNELS), 0)
    real_domains = Hypervisor.domains

    async def listing_then_vanishing(self):
        found = await real_domains(self)
        if name in {d.name for d in found}:
            conn.lookupByName(name).destroy()  # transient: gone for good
        return found

    monkeypatch.setattr(Hypervisor, "domains", listing_then_vanishing)
    hv = await open_hypervisor(DEFAULT_URI, events=True)
    send, _receive = trio.open_memory_channel[ChangeEvent](256)
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(watch, hv, send, poll_interval=0.05))
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
    finally:
        await hv.close()
        try:
            conn.lookupByName(name).destroy()
        except libvirt.libvirtError:
            pass

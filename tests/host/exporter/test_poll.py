"""The exporter's loops against libvirt's test driver, with a real qemu-ga behind a
domain's channel (and scripted or silent agents for the faults)."""

from __future__ import annotations

import itertools
import json
import os
import socket

import libvirt
import pytest
import trio
from exporter_helpers import running_exporter, scrape, series, settings, value, wait_until
from fakeagent import FakeAgent, fake_unix_socket  # tests/ is on sys.path

from gagent.errors import HostError
from gagent.host.inventory.testnode import NodeDomain
from gagent.host.virt import open_hypervisor
from gagent.localagent import find_qemu_ga

pytestmark = pytest.mark.qemu_ga


def fresh(cache, hv: str, name: str, *fields: str):
    """A condition: the domain's entry has every field collected."""

    def check() -> bool:
        entry = cache.domain(hv, name)
        return entry is not None and all(getattr(entry, f) is not None for f in fields)

    return check


def write_deadman(tmp_path, *, deadline: int = 30, armed: bool = True, fired: int = 2) -> None:
    (tmp_path / "deadman.conf").write_text(f"# test\nGAGENT_FREEZE_DEADLINE={deadline}\n")
    state = tmp_path / "deadman"
    state.mkdir(exist_ok=True)
    if armed:
        (state / "armed").write_text(json.dumps({"freeze": "f1", "deadline_s": deadline}) + "\n")
    lines = [json.dumps({"freeze": f"f{i}", "fired_at": 1700000000.0 + i}) for i in range(fired)]
    (state / "fired").write_text("".join(line + "\n" for line in lines))


async def test_every_metric_from_a_real_qemu_ga(make_node, qemu_ga, tmp_path):
    write_deadman(tmp_path)
    target = make_node(
        "kvm1",
        [
            NodeDomain("vm1", agent_socket=str(qemu_ga.socket_path)),
            NodeDomain("bare"),
            NodeDomain("off", running=False),
        ],
    )
    async with running_exporter([target], settings(tmp_path)) as (cache, _):
        await wait_until(
            fresh(cache, "kvm1", "vm1", "info", "filesystems", "users", "frozen", "deadman"),
            "vm1's data collected",
        )
        await wait_until(lambda: "agent" in cache.hypervisor("kvm1").durations, "a batch's end")
        samples = scrape(cache)
    one = {"hypervisor": "kvm1", "domain": "vm1"}
    assert value(samples, "gagent_hypervisor_up", hypervisor="kvm1") == 1
    assert value(samples, "gagent_scrape_errors_total", hypervisor="kvm1", kind="libvirt") == 0
    assert value(samples, "gagent_scrape_errors_total", hypervisor="kvm1", kind="agent") == 0
    groups = series(samples, "gagent_collection_duration_seconds", hypervisor="kvm1")
    assert {dict(k)["group"] for k in groups} == {"libvirt", "agent"}
    assert all(v >= 0 for v in groups.values())
    running = series(samples, "gagent_domain_running")
    assert {dict(k)["domain"]: v for k, v in running.items()} == {"vm1": 1, "bare": 1, "off": 0}
    up = series(samples, "gagent_agent_up")
    assert {dict(k)["domain"]: v for k, v in up.items()} == {"vm1": 1, "bare": 0, "off": 0}
    assert 0 < value(samples, "gagent_agent_round_trip_seconds", **one) < 2
    assert value(samples, "gagent_guest_frozen", **one) == 0
    # the host's qemu-ga reports the host's filesystems: / among them, as df sees it
    root = {"mountpoint": "/"}
    size = value(samples, "gagent_guest_filesystem_size_bytes", **one, **root)
    used = value(samples, "gagent_guest_filesystem_used_bytes", **one, **root)
    st = os.statvfs("/")  # qemu-ga's total-bytes: used + available to non-root (df's Used + Avail)
    df_used = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert abs(size - (df_used + st.f_bavail * st.f_frsize)) < 0.01 * size  # a busy disk moves
    assert abs(used - df_used) < 0.01 * size
    assert 0 < used <= size
    fstype = dict(next(iter(series(samples, "gagent_guest_filesystem_size_bytes", **root))))
    assert fstype["fstype"]
    [(info_labels, info_value)] = series(samples, "gagent_guest_info", **one).items()
    info = dict(info_labels)
    assert info_value == 1
    version = await trio.run_process([find_qemu_ga(), "--version"], capture_stdout=True)
    assert info["agent_version"] in version.stdout.decode()
    assert info["hostname"] == socket.gethostname()
    assert info["kernel"] == os.uname().release
    assert info["os"]
    assert value(samples, "gagent_guest_users", **one) >= 0
    assert value(samples, "gagent_guest_deadman_deadline_seconds", **one) == 30
    assert value(samples, "gagent_guest_deadman_armed", **one) == 1
    assert value(samples, "gagent_guest_deadman_fired_total", **one) == 2
    assert value(samples, "gagent_guest_deadman_last_fired_timestamp_seconds", **one) == 1.7e9 + 1
    # no guest data for the domain without an agent, nor for the one shut off
    for name in ("bare", "off"):
        assert not series(samples, "gagent_guest_info", domain=name)
        assert not series(samples, "gagent_guest_stale_since_seconds", domain=name)
    assert not series(samples, "gagent_guest_stale_since_seconds")


async def test_a_guest_without_the_deadman_switch_has_no_deadman_series(
    make_node, qemu_ga, tmp_path
):
    target = make_node("kvm1", [NodeDomain("vm1", agent_socket=str(qemu_ga.socket_path))])
    async with running_exporter([target], settings(tmp_path)) as (cache, _):
        await wait_until(fresh(cache, "kvm1", "vm1", "info"), "vm1's info")
        samples = scrape(cache)
    assert value(samples, "gagent_guest_info", domain="vm1") == 1
    assert not [name for name, _ in samples if "deadman" in name]


async def test_disarmed_switch_and_no_firing(make_node, qemu_ga, tmp_path):
    write_deadman(tmp_path, deadline=0, armed=False, fired=0)
    target = make_node("kvm1", [NodeDomain("vm1", agent_socket=str(qemu_ga.socket_path))])
    async with running_exporter([target], settings(tmp_path)) as (cache, _):
        await wait_until(fresh(cache, "kvm1", "vm1", "deadman"), "vm1's switch read")
        samples = scrape(cache)
    assert value(samples, "gagent_guest_deadman_deadline_seconds", domain="vm1") == 0
    assert value(samples, "gagent_guest_deadman_armed", domain="vm1") == 0
    assert value(samples, "gagent_guest_deadman_fired_total", domain="vm1") == 0
    assert not series(samples, "gagent_guest_deadman_last_fired_timestamp_seconds")


async def test_a_frozen_guest_reports_frozen_and_keeps_its_other_data(make_node, tmp_path):
    fake = FakeAgent(frozen=True)
    path = str(tmp_path / "frozen.sock")
    async with fake_unix_socket(fake, path):
        target = make_node("kvm1", [NodeDomain("vm1", agent_socket=path)])
        async with running_exporter([target], settings(tmp_path)) as (cache, _):
            await wait_until(fresh(cache, "kvm1", "vm1", "frozen"), "vm1's freeze state")
            samples = scrape(cache)
    assert value(samples, "gagent_guest_frozen", domain="vm1") == 1
    assert value(samples, "gagent_agent_up", domain="vm1") == 1
    # while frozen the agent refuses the rest: the exporter did not even ask
    assert "guest-get-fsinfo" not in fake.commands
    assert "guest-file-open" not in fake.commands


async def test_a_hung_guest_goes_stale_alone_and_never_holds_a_scrape(make_node, qemu_ga, tmp_path):
    hung_path = tmp_path / "hung.sock"
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(hung_path))
    hung.listen(8)  # connects succeed; nothing ever answers (a hung guest agent)
    target = make_node(
        "kvm1",
        [
            NodeDomain("hung", agent_socket=str(hung_path)),
            NodeDomain("vm1", agent_socket=str(qemu_ga.socket_path)),
        ],
    )
    try:
        async with running_exporter([target], settings(tmp_path, agent_timeout=1.0)) as (
            cache,
            [poller],
        ):
            await wait_until(lambda: "hung" in poller.in_flight, "the hung guest's collection")
            # the hung collection is under way: a scrape answers from the cache meanwhile
            with trio.fail_after(10):
                during = await trio.to_thread.run_sync(scrape, cache)
            assert "hung" in poller.in_flight
            assert value(during, "gagent_domain_running", domain="hung") == 1
            await wait_until(
                lambda: cache.domain("kvm1", "hung").stale_since is not None, "hung goes stale"
            )
            await wait_until(fresh(cache, "kvm1", "vm1", "info"), "vm1 collected")
            # vm1 stays fresh while the hung guest keeps missing its deadline
            await wait_until(
                lambda: cache.hypervisor("kvm1").errors["agent"] >= 2, "two missed deadlines"
            )
            samples = scrape(cache)
    finally:
        hung.close()
    assert value(samples, "gagent_agent_up", domain="hung") == 0
    assert value(samples, "gagent_guest_stale_since_seconds", domain="hung") > 1.7e9
    assert not series(samples, "gagent_guest_info", domain="hung")
    assert value(samples, "gagent_agent_up", domain="vm1") == 1
    assert value(samples, "gagent_guest_info", domain="vm1") == 1
    assert not series(samples, "gagent_guest_stale_since_seconds", domain="vm1")
    assert value(samples, "gagent_scrape_errors_total", kind="agent") >= 2
    assert "no answer within 1s" in (cache.domain("kvm1", "hung").error or "")


async def test_a_stopped_agent_goes_stale_and_comes_back(make_node, tmp_path):
    from gagent.localagent import start_local_qemu_ga

    agent = start_local_qemu_ga(tmp_path, name="qga")
    try:
        target = make_node("kvm1", [NodeDomain("vm1", agent_socket=str(agent.socket_path))])
        async with running_exporter([target], settings(tmp_path)) as (cache, _):
            await wait_until(fresh(cache, "kvm1", "vm1", "info"), "vm1 collected")
            agent.stop()
            await wait_until(lambda: not cache.domain("kvm1", "vm1").agent_up, "agent_up 0")
            stale = scrape(cache)
            since = cache.domain("kvm1", "vm1").stale_since
            agent = start_local_qemu_ga(tmp_path, name="qga")
            await wait_until(lambda: cache.domain("kvm1", "vm1").agent_up, "agent_up 1 again")
            back = scrape(cache)
    finally:
        agent.stop()
    assert value(stale, "gagent_guest_stale_since_seconds", domain="vm1") == since
    assert not series(stale, "gagent_guest_filesystem_used_bytes", domain="vm1")
    assert value(back, "gagent_agent_up", domain="vm1") == 1
    assert series(back, "gagent_guest_filesystem_used_bytes", domain="vm1")
    assert not series(back, "gagent_guest_stale_since_seconds")


async def test_a_paused_domain_goes_stale_and_is_not_asked(make_node, qemu_ga, tmp_path):
    name, uri = make_node("kvm1", [NodeDomain("vm1", agent_socket=str(qemu_ga.socket_path))])
    async with running_exporter([(name, uri)], settings(tmp_path)) as (cache, [poller]):
        await wait_until(fresh(cache, name, "vm1", "info"), "vm1 collected")
        # the test driver's node is private to each connection: pause it on the exporter's
        await wait_until(lambda: poller.known, "a listing")
        poller.known["vm1"].record.domain.dom.suspend()
        poller.relist.set()
        await wait_until(lambda: cache.domain(name, "vm1").state == "paused", "seen paused")
        samples = scrape(cache)
    assert value(samples, "gagent_domain_running", domain="vm1") == 0
    assert value(samples, "gagent_agent_up", domain="vm1") == 0
    assert value(samples, "gagent_guest_stale_since_seconds", domain="vm1") > 1.7e9
    assert not series(samples, "gagent_guest_info", domain="vm1")
    assert cache.domain(name, "vm1").error == "paused"


async def test_an_unreachable_hypervisor_is_retried_with_backoff(make_node, tmp_path):
    name, uri = make_node("kvm1", [NodeDomain("vm1")])
    attempts: list[float] = []

    async def flaky_connect(uri_, **kwargs):
        attempts.append(trio.current_time())
        if len(attempts) <= 3:
            raise HostError(f"cannot connect to {uri_}: refused (attempt {len(attempts)})")
        return await open_hypervisor(uri_, **kwargs)

    lines: list[str] = []
    async with running_exporter(
        [(name, uri)], settings(tmp_path), connect=flaky_connect, log=lines.append
    ) as (cache, _):
        down = scrape(cache)
        await wait_until(lambda: cache.hypervisor(name).up, "connected at the fourth attempt")
        samples = scrape(cache)
    assert value(down, "gagent_hypervisor_up", hypervisor=name) == 0
    assert value(samples, "gagent_hypervisor_up", hypervisor=name) == 1
    assert value(samples, "gagent_scrape_errors_total", kind="libvirt") == 3
    assert value(samples, "gagent_domain_running", domain="vm1") == 1
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # the backoff doubles from 0.05 s up to the cap of 0.2 s (sleeps last at least that)
    assert [gap >= least for gap, least in zip(gaps, (0.05, 0.1, 0.2), strict=True)] == [True] * 3
    assert any("refused (attempt 1)" in line for line in lines)


async def test_a_lost_connection_reconnects(make_node, tmp_path):
    # No agent here: a collection cut short by the lost connection resets its socket,
    # and a qemu-ga in unix-listen mode (7.2) exits on ECONNRESET; a guest's does not see it.
    name, uri = make_node("kvm1", [NodeDomain("vm1"), NodeDomain("vm2", running=False)])
    async with running_exporter([(name, uri)], settings(tmp_path)) as (cache, [poller]):
        await wait_until(lambda: cache.hypervisor(name).up, "connected")
        hv_conn = poller.known["vm1"].record.domain.hypervisor.conn
        with pytest.raises(libvirt.libvirtError):
            hv_conn.close()
            hv_conn.getURI()  # closed under the exporter: its next libvirt call fails
        await wait_until(lambda: poller.connections >= 2, "a second connection")
        await wait_until(lambda: cache.hypervisor(name).up, "up again")
        samples = scrape(cache)
    assert value(samples, "gagent_hypervisor_up", hypervisor=name) == 1
    assert value(samples, "gagent_scrape_errors_total", kind="libvirt") >= 1
    assert value(samples, "gagent_domain_running", domain="vm1") == 1
    assert value(samples, "gagent_domain_running", domain="vm2") == 0


async def test_domains_of_several_hypervisors_carry_their_hypervisor(make_node, tmp_path):
    a = make_node("a", [NodeDomain("vm1"), NodeDomain("vm2", running=False)])
    b = make_node("b", [NodeDomain("vm1")])
    async with running_exporter([a, b], settings(tmp_path)) as (cache, _):
        await wait_until(
            lambda: cache.hypervisor("a").up and cache.hypervisor("b").up, "both listed"
        )
        samples = scrape(cache)
    running = series(samples, "gagent_domain_running")
    assert {(dict(k)["hypervisor"], dict(k)["domain"]): v for k, v in running.items()} == {
        ("a", "vm1"): 1,
        ("a", "vm2"): 0,
        ("b", "vm1"): 1,
    }


def test_the_watched_agent_is_ours_when_the_domain_has_our_channel_even_when_down():
    from gagent.host.domxml import Channel
    from gagent.host.exporter.poll import watched_route
    from gagent.host.reach import Transport

    ours = Channel("org.gagent.agent.0", "unix", "virtio", "/run/a.sock", "bind", "disconnected")
    theirs = Channel("org.qemu.guest_agent.0", "unix", "virtio", None, "bind", "connected")
    route = watched_route([theirs, ours])
    assert route is not None and route.transport is Transport.SOCKET
    assert route.socket_path == "/run/a.sock"
    route = watched_route([theirs])
    assert route is not None and route.transport is Transport.LIBVIRT
    pty = Channel("org.gagent.agent.0", "pty", "virtio", None, None, None)
    assert watched_route([pty]) is None
    assert watched_route([]) is None
    # gagent's channel named otherwise: that one is ours, the default name is nobody's
    named = Channel("org.example.agent.0", "unix", "virtio", "/run/b.sock", "bind", "connected")
    route = watched_route([theirs, ours, named], "org.example.agent.0")
    assert route is not None and route.socket_path == "/run/b.sock"
    route = watched_route([theirs, ours], "org.example.agent.0")
    assert route is not None and route.transport is Transport.LIBVIRT


async def test_libvirts_agent_events_mark_its_agent_down_and_due_again(make_node, tmp_path):
    from gagent.host.virt import DomainEvent

    name, uri = make_node("kvm1", [NodeDomain("vm1", agent_socket="/nonexistent/agent.sock")])
    node = trio.Path(uri.removeprefix("test://"))
    # libvirt's own agent channel instead of ours: the exporter watches that one
    text = (await node.read_text()).replace("org.gagent.agent.0", "org.qemu.guest_agent.0")
    await node.write_text(text)
    never = dict.fromkeys(("libvirt", "agent", "fs", "os"), 3600.0)
    slow = settings(tmp_path, intervals=never)
    async with running_exporter([(name, uri)], slow) as (cache, [poller]):
        await wait_until(lambda: "vm1" in poller.known, "listed")
        assert poller.known["vm1"].route.channel.name == "org.qemu.guest_agent.0"
        send, receive = trio.open_memory_channel(8)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller._events, receive)
            await send.send(DomainEvent.agent("vm1", 2))  # agent disconnected
            await wait_until(
                lambda: (
                    ("org.qemu.guest_agent.0", "disconnected") in cache.domain(name, "vm1").channels
                ),
                "libvirt's channel disconnected",
            )
            entry = cache.domain(name, "vm1")
            assert not entry.agent_up and entry.stale_since is not None
            later = dict.fromkeys(("agent", "fs", "os"), 1e12)
            poller.due["vm1"] = dict(later)
            await send.send(DomainEvent.agent("vm1", 1))  # agent connected: collect now
            await wait_until(lambda: poller.due["vm1"] != later, "due again")
            assert dict(cache.domain(name, "vm1").channels)["org.qemu.guest_agent.0"] == (
                "connected"
            )
            relist = poller.relist
            await send.send(DomainEvent.lifecycle("vm1", 3))  # suspended: list again now
            await wait_until(relist.is_set, "a listing asked for")
            nursery.cancel_scope.cancel()


def test_the_backoff_doubles_to_its_cap_and_starts_again_after_a_working_connection():
    from gagent.host.exporter.poll import ExporterSettings, backoff_after

    limits = ExporterSettings(backoff_initial=1.0, backoff_max=5.0)
    waits, wait = [], 0.0
    for _ in range(5):
        wait = backoff_after(wait, False, limits)
        waits.append(wait)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_after(5.0, True, limits) == 1.0

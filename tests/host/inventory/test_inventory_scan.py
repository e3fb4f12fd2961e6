"""Scans against libvirt's test driver (one node XML file per "hypervisor"), with agents:
a scripted fake, and the real qemu-ga on this host, reached through a domain's channel."""

from __future__ import annotations

import os
import socket
import time
from contextlib import asynccontextmanager

import pytest
import trio
from fakeagent import FakeAgent, Return, fake_unix_socket  # tests/ is on sys.path

from gagent.commands import AgentCommands
from gagent.host.inventory import Mode, Target, parse_targets, plan_writes, scan_hypervisors
from gagent.host.inventory import scan as scan_module
from gagent.host.inventory.testnode import NodeDomain
from gagent.host.virt import open_hypervisor

BOGUS = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def kvm(name: str, running: bool = True, **kw) -> NodeDomain:
    return NodeDomain(name, running=running, **kw)


async def test_every_domain_of_every_hypervisor_in_target_order(make_node):
    h1 = make_node(
        "kvmhost1",
        [
            kvm("kvm2", cpu=1, memory_mib=1024, nics=[("br0", "52:54:00:00:01:02")]),
            kvm(
                "kvm1",
                nics=[("br0", "52:54:00:00:01:01"), ("br1", "52:54:00:00:01:11")],
                disks=["/install/vms/kvm1.hda.qcow2", "/install/vms/kvm1.hdb.qcow2"],
            ),
        ],
    )
    h2 = make_node("kvmhost2", [kvm("kvm1"), kvm("kvm3", running=False)])
    result = await scan_hypervisors(parse_targets([h1, h2]), agent=False)
    rows = [g.row() for g in result.guests]
    assert rows == [
        [
            "test",
            "kvm1",
            "kvmhost1",
            rows[0][3],
            "2",
            "2048",
            "br0/52:54:00:00:01:01,br1/52:54:00:00:01:11",
            "/install/vms/kvm1.hda.qcow2,/install/vms/kvm1.hdb.qcow2",
        ],
        ["test", "kvm2", "kvmhost1", rows[1][3], "1", "1024", "br0/52:54:00:00:01:02", ""],
        ["test", "kvm1", "kvmhost2", rows[2][3], "2", "2048", "", ""],
        ["test", "kvm3", "kvmhost2", "", "2", "2048", "", ""],  # shut off: no id
    ]
    assert all(r[3].isdigit() for r in rows[:3])
    assert [g.state for g in result.guests] == ["running", "running", "running", "shut off"]
    assert [g.agent_status for g in result.guests] == ["skipped"] * 3 + ["not running"]
    assert all(g.uuid for g in result.guests)
    assert [(h.name, h.ok, h.domains) for h in result.hypervisors] == [
        ("kvmhost1", True, 2),
        ("kvmhost2", True, 2),
    ]


async def test_unreachable_hypervisors_are_reported_and_the_rest_is_scanned(make_node, tmp_path):
    good = make_node("good", [kvm("vm1")])
    missing = f"test://{tmp_path}/no-such-node.xml"
    result = await scan_hypervisors(parse_targets([BOGUS, good, f"gone={missing}"]), agent=False)
    assert [g.name for g in result.guests] == ["vm1"]
    assert [(h.uri, h.ok) for h in result.hypervisors] == [
        (BOGUS, False),
        (good.split("=", 1)[1], True),
        (missing, False),
    ]
    assert "/nonexistent/libvirt-sock" in (result.hypervisors[0].error or "")
    assert result.failed == [result.hypervisors[0], result.hypervisors[2]]


async def test_a_hanging_hypervisor_times_out_alone(make_node, tmp_path):
    """A socket that accepts and never answers: libvirt's connect hangs; the timeout ends it."""
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    good = make_node("good", [kvm("vm1")])
    try:
        started = time.monotonic()
        result = await scan_hypervisors(
            parse_targets([f"silent=qemu+unix:///system?socket={path}", good]),
            agent=False,
            host_timeout=0.5,
        )
        assert time.monotonic() - started < 3
    finally:
        listener.close()
    assert [g.name for g in result.guests] == ["vm1"]
    assert result.hypervisors[0].error == "no answer within 0.5s (--host-timeout)"


async def test_unnamed_uris_take_libvirts_hostname_and_clashes_are_refused(make_node):
    hv = await open_hypervisor("test:///default")
    try:
        hostname = await hv.hostname()
    finally:
        await hv.close()
    result = await scan_hypervisors(
        parse_targets(["test:///default", make_node("other", [kvm("x")]).split("=", 1)[1]]),
        agent=False,
    )
    first, second = result.hypervisors
    assert (first.name, first.ok) == (hostname, True)
    assert not second.ok and "is also the name of test:///default" in (second.error or "")
    assert {g.hypervisor for g in result.guests} == {hostname}


async def test_order_and_last_found_do_not_depend_on_which_scan_finished_first(
    make_node, monkeypatch
):
    slow, fast = make_node("h1", [kvm("kvm1")]), make_node("h2", [kvm("kvm1")])
    real_open = scan_module.open_hypervisor
    finished: list[str] = []

    async def open_slowly(uri: str, **kw):
        if "h1.xml" in uri:
            await trio.sleep(0.3)
        hv = await real_open(uri, **kw)
        finished.append(uri.rsplit("/", 1)[1])
        return hv

    monkeypatch.setattr(scan_module, "open_hypervisor", open_slowly)
    result = await scan_hypervisors(parse_targets([slow, fast]), agent=False)
    assert finished == ["h2.xml", "h1.xml"]
    assert [g.hypervisor for g in result.guests] == ["h1", "h2"]
    assert [g.hypervisor for g in plan_writes(result.guests, {}, Mode.WRITE).inserts] == ["h2"]


async def test_concurrency_is_bounded(make_node, monkeypatch):
    nodes = [make_node(f"h{i}", [kvm(f"vm{i}")]) for i in range(6)]
    real_open = scan_module.open_hypervisor
    active = peak = 0

    async def counting_open(uri: str, **kw):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await trio.sleep(0.05)
            return await real_open(uri, **kw)
        finally:
            active -= 1

    monkeypatch.setattr(scan_module, "open_hypervisor", counting_open)
    result = await scan_hypervisors(parse_targets(nodes), agent=False, concurrency=2)
    assert len(result.guests) == 6 and peak == 2


class CannedAgent(AgentCommands):
    """Answers from a dict; ``hang=True`` never answers."""

    def __init__(self, hang: bool = False):
        super().__init__()
        self.hang = hang

    async def execute(self, command, arguments=None):
        if self.hang:
            await trio.sleep_forever()
        return {
            "guest-info": {
                "version": "7.2.0",
                "supported_commands": [
                    {"name": n, "enabled": True, "success-response": True}
                    for n in (
                        "guest-get-osinfo",
                        "guest-get-host-name",
                        "guest-network-get-interfaces",
                        "guest-get-fsinfo",
                        "guest-get-users",
                    )
                ],
            },
            "guest-get-osinfo": {
                "pretty-name": "Debian GNU/Linux 12 (bookworm)",
                "kernel-release": "6.1.0-18-amd64",
            },
            "guest-get-host-name": {"host-name": "web1"},
            "guest-network-get-interfaces": [
                {
                    "name": "eth0",
                    "hardware-address": "52:54:00:00:00:01",
                    "ip-addresses": [
                        {"ip-address": "10.0.0.5", "ip-address-type": "ipv4", "prefix": 24}
                    ],
                }
            ],
            "guest-get-fsinfo": [
                {
                    "name": "vda1",
                    "mountpoint": "/",
                    "type": "ext4",
                    "disk": [],
                    "used-bytes": 1 << 30,
                    "total-bytes": 4 << 30,
                }
            ],
            "guest-get-users": [{"user": "root", "login-time": 1700000000.5}],
        }[command]


async def test_a_silent_agent_never_slows_the_others(make_node):
    node = make_node("h1", [kvm(f"vm{i}") for i in range(8)] + [kvm("off", running=False)])

    @asynccontextmanager
    async def opener(_hv, record):
        yield CannedAgent(hang=record.domain.name == "vm3")

    started = time.monotonic()
    result = await scan_hypervisors(
        parse_targets([node]),
        agent_timeout=0.5,
        concurrency=4,
        agent_opener=opener,
        route_check=None,
    )
    assert time.monotonic() - started < 1.5  # one timeout's worth, not a queue of them
    status = {g.name: g.agent_status for g in result.guests}
    assert status == {**{f"vm{i}": "ok" for i in range(8)}, "vm3": "timeout", "off": "not running"}
    web = next(g for g in result.guests if g.name == "vm0").agent
    assert web is not None
    assert (web.version, web.os, web.kernel, web.hostname) == (
        "7.2.0",
        "Debian GNU/Linux 12 (bookworm)",
        "6.1.0-18-amd64",
        "web1",
    )
    assert web.addresses() == ["10.0.0.5/24"]
    assert web.filesystems == [
        {"mountpoint": "/", "type": "ext4", "used_bytes": 1 << 30, "total_bytes": 4 << 30}
    ]
    assert web.users == [{"user": "root", "domain": None, "login_time": 1700000000.5}]
    assert result.agent_counts() == {"ok": 7, "timeout": 1, "not running": 1}


async def test_fake_agent_through_the_domains_channel(make_node, tmp_path):
    """The real route: the test-driver domain's gagent channel points at a socket."""
    fake = FakeAgent(disabled={"guest-get-users"})
    commands = [
        "guest-get-osinfo",
        "guest-get-host-name",
        "guest-network-get-interfaces",
        "guest-get-fsinfo",
        "guest-get-users",
    ]
    fake.set_default(
        "guest-info",
        Return(
            {
                "version": "8.0-fake",
                "supported_commands": [
                    {"name": n, "enabled": n != "guest-get-users", "success-response": True}
                    for n in commands
                ],
            }
        ),
    )
    fake.set_default(
        "guest-get-osinfo", Return({"pretty-name": "Fake OS 1", "kernel-release": "1.0"})
    )
    fake.set_default("guest-get-host-name", Return({"host-name": "fakehost"}))
    fake.set_default("guest-network-get-interfaces", Return([]))
    fake.set_default("guest-get-fsinfo", Return([]))
    path = tmp_path / "agent.sock"
    node = make_node(
        "h1",
        [
            kvm("with-agent", agent_socket=str(path)),
            kvm("no-channel"),
            kvm("dead-socket", agent_socket=str(tmp_path / "none.sock")),
        ],
    )
    async with fake_unix_socket(fake, path):
        result = await scan_hypervisors(parse_targets([node]), agent_timeout=5)
    by_name = {g.name: g for g in result.guests}
    agent = by_name["with-agent"].agent
    assert by_name["with-agent"].agent_status == "ok" and agent is not None
    assert (agent.version, agent.os, agent.hostname, agent.users) == (
        "8.0-fake",
        "Fake OS 1",
        "fakehost",
        None,
    )
    assert agent.missing and agent.missing[0].startswith("guest-get-users:")
    assert by_name["no-channel"].agent_status == "unavailable"
    assert "no agent channel" in (by_name["no-channel"].agent_error or "")
    assert by_name["dead-socket"].agent_status == "unavailable"


@pytest.mark.qemu_ga
async def test_the_channel_asked_for_is_the_one_looked_for(make_node, qemu_ga):
    """gagent's channel named otherwise (the configuration file's 'channel'): the scan
    reaches the agent only when asked for the domain's own name."""
    node = make_node("h1", [kvm("guest", agent_socket=str(qemu_ga.socket_path))])
    other = await scan_hypervisors(parse_targets([node]), channel_name="org.example.agent.0")
    (g,) = other.guests
    assert g.agent_status == "unavailable"
    assert "org.example.agent.0" in (g.agent_error or "")
    same = await scan_hypervisors(parse_targets([node]), channel_name="org.gagent.agent.0")
    assert same.guests[0].agent_status == "ok", same.guests[0].agent_error


@pytest.mark.qemu_ga
async def test_real_qemu_ga_through_the_domains_channel(make_node, qemu_ga):
    """The real qemu-ga of this host stands for a guest's agent: real answers, real parsing."""
    node = make_node("h1", [kvm("guest", agent_socket=str(qemu_ga.socket_path))])
    result = await scan_hypervisors(parse_targets([node]), agent_timeout=10)
    (g,) = result.guests
    assert g.agent_status == "ok", g.agent_error
    agent = g.agent
    assert agent is not None and agent.version
    assert agent.hostname == socket.gethostname()
    assert agent.kernel == os.uname().release
    assert agent.os  # PRETTY_NAME of /etc/os-release
    assert "127.0.0.1/8" in agent.addresses()
    assert agent.users is not None


def test_targets_are_plain_data():
    assert Target("test:///x.xml", "a") == Target("test:///x.xml", "a")

"""gagent.host.channel_ops against libvirt's test driver (test:///default, own domains).

The test driver behaves like libvirt for definitions (defineXML on a running
domain changes the persistent definition only; the change shows at the next
start) and refuses every hot-plug (attach/detachDeviceFlags: VIR_ERR_NO_SUPPORT),
which exercises the "takes effect at the next boot" paths for real.
"""

from __future__ import annotations

import re
import shlex
import threading

import libvirt
import pytest
import trio
from libvirt_domains import INACTIVE, xmls

from gagent.errors import HostError, UsageError
from gagent.host.channel import (
    GAGENT_CHANNEL,
    LIBVIRT_AGENT_CHANNEL,
    ChannelSpec,
    find_channel,
    list_channels,
)
from gagent.host.channel_lock import ChannelEditConflict
from gagent.host.channel_ops import add_to_domain, channels_of, remove_from_domain, uri_is_local
from gagent.host.virt import DEFAULT_URI, Hypervisor, open_hypervisor

TIMEOUT = 10


@pytest.fixture
async def hv():
    hypervisor = await open_hypervisor(DEFAULT_URI)
    yield hypervisor
    await hypervisor.close()


def names_in(xml: str) -> list[str | None]:
    return [c.name for c in list_channels(xml)]


# --------------------------------------------------------------------- add


async def test_add_to_running_domain_changes_definition_and_says_next_boot(conn, hv, make_domain):
    name = make_domain()
    live_before, _ = xmls(conn, name)
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec())
    live_after, inactive_after = xmls(conn, name)
    assert result.changed is True
    assert result.live is False
    assert result.domain == name
    assert find_channel(inactive_after, GAGENT_CHANNEL) is not None
    assert "type='virtio-serial'" in inactive_after
    assert live_after == live_before  # the test driver refuses hot-plug
    text = str(result)
    assert text.startswith(f"added channel {GAGENT_CHANNEL} (unix socket chosen by libvirt)")
    assert "hot-plug refused (" in text and "not supported" in text
    assert text.endswith("takes effect at the next boot")
    assert f"+      <target type='virtio' name='{GAGENT_CHANNEL}'/>" in result.diff
    # the next boot has it
    dom = conn.lookupByName(name)
    dom.destroy()
    dom.create()
    assert find_channel(dom.XMLDesc(0), GAGENT_CHANNEL) is not None


async def test_add_twice_is_idempotent(conn, hv, make_domain):
    name = make_domain(start=False)
    with trio.fail_after(TIMEOUT):
        first = await add_to_domain(await hv.lookup(name), ChannelSpec())
        _, after_first = xmls(conn, name)
        second = await add_to_domain(await hv.lookup(name), ChannelSpec())
    _, after_second = xmls(conn, name)
    assert first.changed and not second.changed
    assert after_second == after_first
    assert names_in(after_second).count(GAGENT_CHANNEL) == 1
    assert str(second) == f"channel {GAGENT_CHANNEL} is already present in the definition"
    assert second.diff == ""


async def test_add_twice_to_running_domain(conn, hv, make_domain):
    name = make_domain()
    with trio.fail_after(TIMEOUT):
        await add_to_domain(await hv.lookup(name), ChannelSpec())
        second = await add_to_domain(await hv.lookup(name), ChannelSpec())
    assert not second.changed
    assert names_in(xmls(conn, name)[1]).count(GAGENT_CHANNEL) == 1
    assert "already present in the definition" in str(second)


async def test_add_dry_run_changes_nothing(conn, hv, make_domain):
    name = make_domain()
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(), dry_run=True)
    assert xmls(conn, name) == before
    assert result.changed is True
    assert result.diff.startswith("--- current\n+++ proposed\n")
    assert f"name='{GAGENT_CHANNEL}'" in result.diff
    assert "would hot-plug into the running domain:\n<channel type='unix'>" in str(result)


async def test_add_to_defined_inactive_domain(conn, hv, make_domain, tmp_path):
    name = make_domain(start=False)
    path = str(tmp_path / "vm.sock")
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(path=path))
    assert result.changed and not result.live
    assert str(result) == (
        f"added channel {GAGENT_CHANNEL} (unix socket {path}) and a virtio-serial "
        "controller (index 0)"
    )
    channel = find_channel(xmls(conn, name)[1], GAGENT_CHANNEL)
    assert channel is not None
    assert (channel.kind, channel.target_type, channel.path, channel.mode) == (
        "unix", "virtio", path, "bind",
    )  # fmt: skip


async def test_add_no_live_on_running_domain(conn, hv, make_domain):
    name = make_domain()
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(), live=False)
    assert result.changed
    assert "not hot-plugged (--no-live): takes effect at the next boot" in str(result)
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL) is not None


async def test_add_to_transient_domain_fails_and_changes_nothing(conn, hv, make_domain):
    name = make_domain(persistent=False)
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT), pytest.raises(HostError) as info:
        await add_to_domain(await hv.lookup(name), ChannelSpec())
    assert info.value.code == libvirt.VIR_ERR_NO_SUPPORT
    assert xmls(conn, name) == before
    assert not conn.lookupByName(name).isPersistent()


async def test_add_libvirt_managed_agent_channel(conn, hv, make_domain):
    name = make_domain(start=False)
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(
            await hv.lookup(name), ChannelSpec(LIBVIRT_AGENT_CHANNEL), libvirt_managed=True
        )
    assert "reach it with --transport libvirt" in str(result)
    assert find_channel(xmls(conn, name)[1], LIBVIRT_AGENT_CHANNEL) is not None


async def test_add_refuses_bad_specs_before_touching_libvirt(conn, hv, make_domain, tmp_path):
    name = make_domain(start=False)
    before = xmls(conn, name)
    dom = await hv.lookup(name)
    with trio.fail_after(TIMEOUT):
        for spec in (
            ChannelSpec(LIBVIRT_AGENT_CHANNEL),
            ChannelSpec("bad name"),
            ChannelSpec(""),
            ChannelSpec("../../etc/passwd"),
            ChannelSpec(path="relative.sock"),
            ChannelSpec(path=str(tmp_path / "missing-dir" / "vm.sock")),
        ):
            with pytest.raises(UsageError):
                await add_to_domain(dom, spec)
    assert xmls(conn, name) == before


async def test_failed_define_leaves_the_old_definition(conn, hv, make_domain, monkeypatch):
    """libvirt refuses the new definition: nothing was changed.

    The refusal is libvirt's own: the patched define_xml hands libvirt the new
    definition renamed to 'test' (our UUID under another domain's name), which it
    rejects ("domain ... is already defined with uuid ...").
    """
    name = make_domain()
    before = xmls(conn, name)
    sent: list[str] = []
    real_define = Hypervisor.define_xml

    async def define_clashing(self, xml):
        sent.append(xml)
        return await real_define(self, xml.replace(f"<name>{name}</name>", "<name>test</name>"))

    monkeypatch.setattr(Hypervisor, "define_xml", define_clashing)
    with trio.fail_after(TIMEOUT), pytest.raises(HostError) as info:
        await add_to_domain(await hv.lookup(name), ChannelSpec())
    assert info.value.code == libvirt.VIR_ERR_OPERATION_FAILED
    assert "is already defined with uuid" in (info.value.libvirt_message or "")
    assert len(sent) == 1 and find_channel(sent[0], GAGENT_CHANNEL) is not None
    assert xmls(conn, name) == before
    assert find_channel(conn.lookupByName("test").XMLDesc(INACTIVE), GAGENT_CHANNEL) is None


# ------------------------------------------------------------------ remove


async def test_remove_from_definition(conn, hv, make_domain):
    name = make_domain(start=False)
    with trio.fail_after(TIMEOUT):
        await add_to_domain(await hv.lookup(name), ChannelSpec())
        result = await remove_from_domain(await hv.lookup(name), GAGENT_CHANNEL)
    inactive = xmls(conn, name)[1]
    assert result.changed
    assert str(result) == f"removed channel {GAGENT_CHANNEL}"
    assert find_channel(inactive, GAGENT_CHANNEL) is None
    assert "type='virtio-serial'" in inactive  # the controller stays
    assert f"-      <target type='virtio' name='{GAGENT_CHANNEL}'/>" in result.diff


async def test_remove_absent_channel(conn, hv, make_domain):
    name = make_domain(start=False)
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT):
        result = await remove_from_domain(await hv.lookup(name), GAGENT_CHANNEL)
    assert not result.changed
    assert str(result) == f"no channel {GAGENT_CHANNEL} to remove in the definition"
    assert xmls(conn, name) == before


async def test_remove_dry_run_changes_nothing(conn, hv, make_domain):
    channel = f"    <channel type='unix'>\n      <target type='virtio' name='{GAGENT_CHANNEL}'/>\n    </channel>\n"  # noqa: E501
    name = make_domain(channel)
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT):
        result = await remove_from_domain(await hv.lookup(name), GAGENT_CHANNEL, dry_run=True)
    assert xmls(conn, name) == before
    assert result.changed
    assert result.diff.startswith("--- current\n+++ proposed\n")
    assert "would unplug from the running domain:" in str(result)


async def test_remove_from_running_domain_unplug_refused(conn, hv, make_domain):
    channel = f"    <channel type='unix'>\n      <target type='virtio' name='{GAGENT_CHANNEL}'/>\n    </channel>\n"  # noqa: E501
    name = make_domain(channel)
    live_before, _ = xmls(conn, name)
    with trio.fail_after(TIMEOUT):
        result = await remove_from_domain(await hv.lookup(name), GAGENT_CHANNEL)
    live_after, inactive_after = xmls(conn, name)
    assert result.changed and not result.live
    assert find_channel(inactive_after, GAGENT_CHANNEL) is None
    assert live_after == live_before
    assert "unplug refused (" in str(result) and str(result).endswith("gone at the next boot")


# ---------------------------------------------------------------- channels_of


async def test_channels_of_running_and_inactive(conn, hv, make_domain, tmp_path):
    path = str(tmp_path / "a.sock")
    devices = (
        f"    <channel type='unix'>\n      <source mode='bind' path='{path}'/>\n"
        f"      <target type='virtio' name='{GAGENT_CHANNEL}'/>\n    </channel>\n"
    )
    running, stopped = make_domain(devices), make_domain(devices, start=False)
    with trio.fail_after(TIMEOUT):
        for name in (running, stopped):
            channels = await channels_of(await hv.lookup(name))
            assert [(c.name, c.kind, c.path) for c in channels] == [(GAGENT_CHANNEL, "unix", path)]
        assert await channels_of(await hv.lookup("test")) == []


async def test_channels_of_running_domain_reads_the_live_xml(conn, hv, make_domain):
    name = make_domain()
    with trio.fail_after(TIMEOUT):
        await add_to_domain(await hv.lookup(name), ChannelSpec())  # definition only
        assert await channels_of(await hv.lookup(name)) == []


@pytest.mark.parametrize(
    ("uri", "local"),
    [("test:///default", True), ("qemu:///system", True), ("qemu+ssh://root@kvm1/system", False),
     ("qemu+tcp://10.0.0.2/system", False)],
)  # fmt: skip
def test_uri_is_local(uri, local):
    assert uri_is_local(uri) is local


# --------------------------------------------------------- transient domains


TRANSIENT_CHANNEL = (
    f"    <channel type='unix'>\n      <target type='virtio' name='{GAGENT_CHANNEL}'/>\n"
    "    </channel>\n"
)


async def test_remove_from_transient_domain_refused_says_nothing_changed(conn, hv, make_domain):
    name = make_domain(TRANSIENT_CHANNEL, persistent=False)
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT):
        try:
            result = await remove_from_domain(await hv.lookup(name), GAGENT_CHANNEL)
        except HostError:
            result = None  # raising, as add_to_domain does, is fine too
    assert xmls(conn, name) == before
    if result is not None:
        assert not result.changed
        assert "next boot" not in str(result)
        assert "nothing was changed" in str(result)


async def test_remove_absent_channel_from_transient_domain_says_so(hv, make_domain):
    name = make_domain(persistent=False)
    with trio.fail_after(TIMEOUT):
        result = await remove_from_domain(await hv.lookup(name), GAGENT_CHANNEL)
    assert not result.changed
    assert f"no channel {GAGENT_CHANNEL}" in str(result)


async def test_remove_refuses_the_empty_name(conn, hv, make_domain):
    name = make_domain(TRANSIENT_CHANNEL)
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT), pytest.raises(UsageError, match="the channel name is empty"):
        await remove_from_domain(await hv.lookup(name), "")
    assert xmls(conn, name) == before


# ------------------------------------------------- concurrent edits of one domain
# test:///default lives in this process, so the concurrent editors are trio tasks
# sharing one connection, or threads each with its own trio loop and connection
# (as two gagent processes would be).  Without the lock, two adds lost one
# channel in over a quarter of such rounds.

ROUNDS = 25
NAMES = [f"org.gagent.race.{i}" for i in range(4)]


async def test_concurrent_adds_lose_nothing(conn, hv, make_domain):
    results: list[tuple[str, str]] = []

    async def add(name: str, channel: str) -> None:
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(channel))
        assert result.changed, result
        results.append((name, str(result).splitlines()[0]))

    for round_ in range(ROUNDS):
        name = make_domain(start=round_ % 2 == 0)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for channel in NAMES:
                    nursery.start_soon(add, name, channel)
        defined = names_in(xmls(conn, name)[1])
        assert sorted(defined) == NAMES, f"round {round_}: {defined}"
    assert len(results) == ROUNDS * len(NAMES)
    assert all(line.startswith("added channel org.gagent.race.") for _, line in results)


def test_concurrent_adds_from_threads_with_their_own_connections_lose_nothing(conn, make_domain):
    def add(name: str, channel: str) -> None:
        async def run() -> None:
            hypervisor = await open_hypervisor(DEFAULT_URI)
            try:
                with trio.fail_after(60):
                    await add_to_domain(await hypervisor.lookup(name), ChannelSpec(channel))
            finally:
                await hypervisor.close()

        trio.run(run)

    def worker(name: str, channel: str, errors: list[BaseException]) -> None:
        try:
            add(name, channel)
        except BaseException as exc:  # reported below, with the round
            errors.append(exc)

    for round_ in range(ROUNDS // 2):
        name = make_domain(start=False)
        errors: list[BaseException] = []
        threads = [threading.Thread(target=worker, args=(name, ch, errors)) for ch in NAMES[:2]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert not errors, f"round {round_}: {errors}"
        assert sorted(names_in(xmls(conn, name)[1])) == NAMES[:2], f"round {round_}"


async def test_concurrent_add_and_remove_both_hold(conn, hv, make_domain):
    for round_ in range(ROUNDS // 2):
        name = make_domain(start=False)
        with trio.fail_after(TIMEOUT):
            await add_to_domain(await hv.lookup(name), ChannelSpec("org.gagent.old.0"))
            await add_to_domain(await hv.lookup(name), ChannelSpec("org.gagent.kept.0"))
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(remove_from_domain, await hv.lookup(name), "org.gagent.old.0")
                nursery.start_soon(
                    add_to_domain, await hv.lookup(name), ChannelSpec("org.gagent.new.0")
                )
        assert names_in(xmls(conn, name)[1]) == ["org.gagent.kept.0", "org.gagent.new.0"], round_


# ------------------------------------- verified after defineXML: other tools' writes


def rewritten_after_define(monkeypatch, conn, times: int) -> list[str]:
    """After each of our next ``times`` defineXML calls, another writer (as 'virsh edit'
    would, without gagent's lock) puts back the definition it read before ours: a real
    second defineXML through libvirt.  Returns the XML we sent, call by call."""
    sent: list[str] = []
    real_define = Hypervisor.define_xml

    async def define_then_overwritten(self, xml):
        sent.append(xml)
        name = re.search(r"<name>([^<]+)</name>", xml).group(1)
        stale = conn.lookupByName(name).XMLDesc(INACTIVE)
        domain = await real_define(self, xml)
        if len(sent) <= times:
            conn.defineXML(stale)
        return domain

    monkeypatch.setattr(Hypervisor, "define_xml", define_then_overwritten)
    return sent


async def test_add_lost_to_another_writer_once_is_made_again(conn, hv, make_domain, monkeypatch):
    name = make_domain(start=False)
    sent = rewritten_after_define(monkeypatch, conn, times=1)
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec())
    assert len(sent) == 2
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL) is not None
    assert result.changed
    assert str(result).splitlines()[1] == (
        "(the definition lost the first attempt to a concurrent change by another tool: "
        "made again and verified)"
    )


async def test_add_lost_twice_fails_loudly(conn, hv, make_domain, monkeypatch, tmp_path):
    name = make_domain(start=False)
    before = xmls(conn, name)
    sent = rewritten_after_define(monkeypatch, conn, times=2)
    (tmp_path / "x y").mkdir()
    path = str(tmp_path / "x y" / "a.sock")
    with trio.fail_after(TIMEOUT), pytest.raises(ChannelEditConflict) as info:
        await add_to_domain(await hv.lookup(name), ChannelSpec(path=path))
    assert len(sent) == 2
    assert xmls(conn, name) == before  # the other writer's version stands, and we say so
    message = str(info.value)
    assert message.startswith(
        f"adding channel {GAGENT_CHANNEL} did not stay in the definition of {name}: another "
        "tool rewrote the definition at the same time, twice (virsh edit?); once it is done, "
        "run again: "
    )
    # the command it names is the one that was asked for, quoted for a shell
    command = shlex.split(message.split("run again: ", 1)[1])
    assert command == [
        "gagent", "channel", "add", name, "-c", DEFAULT_URI, "--name", GAGENT_CHANNEL,
        "--path", path,
    ]  # fmt: skip


async def test_remove_undone_by_another_writer_is_made_again_then_fails_loudly(
    conn, hv, make_domain, monkeypatch
):
    name = make_domain(TRANSIENT_CHANNEL, start=False)
    rewritten_after_define(monkeypatch, conn, times=1)
    with trio.fail_after(TIMEOUT):
        result = await remove_from_domain(await hv.lookup(name), GAGENT_CHANNEL)
    assert "made again and verified" in str(result)
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL) is None

    other = make_domain(TRANSIENT_CHANNEL, start=False)
    rewritten_after_define(monkeypatch, conn, times=2)
    with trio.fail_after(TIMEOUT), pytest.raises(ChannelEditConflict) as info:
        await remove_from_domain(await hv.lookup(other), GAGENT_CHANNEL)
    assert str(info.value).startswith(
        f"removing channel {GAGENT_CHANNEL} did not stay in the definition of {other}:"
    )
    assert str(info.value).endswith(
        f"run again: gagent channel remove {other} -c {DEFAULT_URI} --name {GAGENT_CHANNEL}"
    )
    assert find_channel(xmls(conn, other)[1], GAGENT_CHANNEL) is not None

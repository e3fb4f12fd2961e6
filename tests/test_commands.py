"""AgentCommands: every read-only command against the real qemu-ga (asserting on
what is true of this host), the local refusals (blocked commands, the freeze
guard), and the arguments the wrappers send (a scripted transport, no I/O)."""

from __future__ import annotations

import base64
import os
import platform
import pwd
import re
import shutil
import socket
import subprocess
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import gagent
from gagent.commands import AgentCommands
from gagent.errors import (
    AgentError,
    CommandDisabled,
    CommandUnavailable,
    FrozenStateViolation,
    UsageError,
)
from gagent.fs_types import FsfreezeStatus, SeekWhence
from gagent.hw_types import MemoryBlock, VCpu
from gagent.localagent import BLOCKED_RPCS, find_qemu_ga
from gagent.types import ShutdownMode

TIMEOUT = 15


@pytest.fixture
async def agent(qemu_ga):
    async with AsyncExitStack() as stack:
        with trio.fail_after(TIMEOUT):
            connected = await stack.enter_async_context(gagent.open_agent(qemu_ga.socket_path))
        yield connected


# ----------------------------------------- what this host says (plain, sync reads)


def host_qemu_ga_banner() -> str:
    return subprocess.run([find_qemu_ga(), "--version"], capture_output=True, text=True).stdout


def host_logged_in_users() -> set[str] | None:
    if not shutil.which("who"):
        return None
    who = subprocess.run(["who"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in who.splitlines()}


def host_interface(name: str) -> tuple[str, int, int]:
    """MAC address, rx_bytes and tx_packets of a network interface."""
    sysfs = Path("/sys/class/net", name)
    return (
        (sysfs / "address").read_text().strip(),
        int((sysfs / "statistics/rx_bytes").read_text()),
        int((sysfs / "statistics/tx_packets").read_text()),
    )


def host_mounts() -> dict[str, str]:
    """mountpoint -> filesystem type (the last mount on a mountpoint wins)."""
    mounts = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mountpoint, fstype, *_ = line.split()
        mounts[mountpoint.replace("\\040", " ")] = fstype
    return mounts


def host_is_partition(device: str) -> bool | None:
    """None if the device node does not exist."""
    if not os.path.exists(device):
        return None
    return Path("/sys/class/block", os.path.basename(device), "partition").exists()


def host_cpus() -> dict[int, bool]:
    """cpu id -> online (cpu0 often has no 'online' file: it cannot go offline)."""
    cpus = {}
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        online = path / "online"
        cpus[int(path.name[3:])] = online.read_text().strip() == "1" if online.exists() else True
    return cpus


def host_cpu_user_ms() -> dict[int, int]:
    ticks = os.sysconf("SC_CLK_TCK")
    lines = Path("/proc/stat").read_text().splitlines()
    rows = [line.split() for line in lines if re.match(r"cpu\d", line)]
    return {int(row[0][3:]): int(row[1]) * 1000 // ticks for row in rows}


def host_memory_blocks() -> tuple[int, dict[int, bool]]:
    """Block size, and phys index -> online."""
    memory = Path("/sys/devices/system/memory")
    size = int((memory / "block_size_bytes").read_text(), 16)
    blocks = {
        int(p.name[6:]): (p / "state").read_text().strip() == "online"
        for p in memory.glob("memory[0-9]*")
    }
    return size, blocks


def host_disk_read_ios() -> dict[str, int]:
    rows = [line.split() for line in Path("/proc/diskstats").read_text().splitlines()]
    return {row[2]: int(row[3]) for row in rows}


def host_authorized_keys() -> tuple[str, list[str] | None]:
    """This user's name and authorized keys (None without an authorized_keys file)."""
    user = pwd.getpwuid(os.getuid())
    keys_file = Path(user.pw_dir, ".ssh", "authorized_keys")
    if not keys_file.exists():
        return user.pw_name, None
    lines = [line.strip() for line in keys_file.read_text().splitlines()]
    return user.pw_name, [line for line in lines if line and not line.startswith("#")]


# ------------------------------------------------------------- real qemu-ga


@pytest.mark.qemu_ga
async def test_ping_and_info(agent):
    with trio.fail_after(TIMEOUT):
        await agent.ping()
        info = await agent.info()
    assert info.version and info.version in host_qemu_ga_banner()
    assert info.commands["guest-ping"].enabled
    assert not info.commands["guest-shutdown"].success_response
    for command in BLOCKED_RPCS:
        assert not info.commands[command].enabled, command


@pytest.mark.qemu_ga
async def test_osinfo_matches_uname_and_os_release(agent):
    with trio.fail_after(TIMEOUT):
        info = await agent.osinfo()
    uname = os.uname()
    assert info.kernel_release == uname.release
    assert info.kernel_version == uname.version
    assert info.machine == uname.machine
    release = platform.freedesktop_os_release()
    assert info.id == release.get("ID")
    assert info.pretty_name == release.get("PRETTY_NAME")
    assert info.version_id == release.get("VERSION_ID")


@pytest.mark.qemu_ga
async def test_host_name(agent):
    with trio.fail_after(TIMEOUT):
        assert await agent.host_name() == socket.gethostname()


@pytest.mark.qemu_ga
async def test_users_match_who(agent):
    with trio.fail_after(TIMEOUT):
        users = await agent.users()
    assert all(u.login_time > 0 for u in users)
    expected = host_logged_in_users()
    if expected is not None:
        assert {u.user for u in users} == expected


@pytest.mark.qemu_ga
async def test_timezone_and_time(agent):
    with trio.fail_after(TIMEOUT):
        zone = await agent.timezone()
        before = time.time_ns()
        guest_time = await agent.time()
        after = time.time_ns()
    local = time.localtime()
    assert zone.offset == local.tm_gmtoff
    assert zone.zone == local.tm_zone
    assert before - 10**9 <= guest_time <= after + 10**9


@pytest.mark.qemu_ga
async def test_network_interfaces(agent):
    with trio.fail_after(TIMEOUT):
        interfaces = {i.name: i for i in await agent.network_interfaces()}
    assert set(interfaces) == {name for _, name in socket.if_nameindex()}
    lo = interfaces["lo"]
    assert ("127.0.0.1", 8) in {(a.address, a.prefix) for a in lo.ip_addresses}
    assert lo.statistics is not None
    for name, interface in interfaces.items():
        mac, rx_bytes, tx_packets = host_interface(name)  # read later: counters only grow
        assert interface.hardware_address == mac
        if interface.statistics is not None:
            assert interface.statistics.rx_bytes <= rx_bytes
            assert interface.statistics.tx_packets <= tx_packets


@pytest.mark.qemu_ga
async def test_fsinfo(agent):
    with trio.fail_after(TIMEOUT):
        filesystems = {fs.mountpoint: fs for fs in await agent.fsinfo()}
    mounts = host_mounts()
    assert "/" in filesystems
    for mountpoint, fs in filesystems.items():
        assert fs.type == mounts[mountpoint]
    root = filesystems["/"]
    stat = os.statvfs("/")
    free = stat.f_bavail * stat.f_frsize
    assert root.total_bytes is not None and root.used_bytes is not None
    assert root.used_bytes <= root.total_bytes
    # total - used is what non-root users may still write (others write meanwhile).
    assert abs((root.total_bytes - root.used_bytes) - free) < max(root.total_bytes // 100, 2**26)
    assert all(disk.dev is None or host_is_partition(disk.dev) is not None for disk in root.disks)


@pytest.mark.qemu_ga
async def test_disks(agent):
    with trio.fail_after(TIMEOUT):
        disks = await agent.disks()
    assert disks
    for disk in disks:
        assert disk.name.startswith("/dev/")
        assert disk.partition == host_is_partition(disk.name)


@pytest.mark.qemu_ga
async def test_vcpus_and_cpustats(agent):
    with trio.fail_after(TIMEOUT):
        vcpus = await agent.vcpus()
        before = host_cpu_user_ms()
        stats = await agent.cpustats()
        after = host_cpu_user_ms()
    assert {v.logical_id: v.online for v in vcpus} == host_cpus()
    assert {s.cpu for s in stats} == set(before)
    for s in stats:
        assert s.type == "linux"
        assert before[s.cpu] <= s.user <= after[s.cpu]


@pytest.mark.qemu_ga
async def test_memory_blocks(agent):
    with trio.fail_after(TIMEOUT):
        info = await agent.memory_block_info()
        blocks = await agent.memory_blocks()
    size, online = host_memory_blocks()
    assert info.size == size
    assert {b.phys_index: b.online for b in blocks} == online


@pytest.mark.qemu_ga
async def test_diskstats(agent):
    with trio.fail_after(TIMEOUT):
        before = host_disk_read_ios()
        stats = await agent.diskstats()
        after = host_disk_read_ios()
    assert {s.name for s in stats} == set(before)
    for s in stats:
        assert s.stats.read_ios is not None
        assert before[s.name] <= s.stats.read_ios <= after[s.name]


@pytest.mark.qemu_ga
async def test_fsfreeze_status_and_ssh_keys(agent):
    user, keys = host_authorized_keys()
    with trio.fail_after(TIMEOUT):
        assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
        assert agent.frozen is False
        if keys is not None:
            assert await agent.ssh_get_authorized_keys(user) == keys
        else:
            with pytest.raises(AgentError, match="authorized_keys"):
                await agent.ssh_get_authorized_keys(user)


@pytest.mark.qemu_ga
async def test_file_commands(agent, tmp_path):
    path = tmp_path / "file.bin"
    payload = bytes(range(256)) * 40
    with trio.fail_after(TIMEOUT):
        handle = await agent.file_open(str(path), "w+")
        assert (await agent.file_write(handle, payload)).count == len(payload)
        await agent.file_flush(handle)
        assert path.read_bytes() == payload
        assert (await agent.file_seek(handle, 0, SeekWhence.END)).position == len(payload)
        assert (await agent.file_seek(handle, 10, "set")).position == 10
        first = await agent.file_read(handle, 100)
        assert first.data == payload[10:110] and not first.eof
        rest = await agent.file_read(handle, len(payload))
        assert rest.data == payload[110:] and rest.eof
        await agent.file_close(handle)
        with pytest.raises(AgentError, match="not been found"):
            await agent.file_close(handle)
        with pytest.raises(AgentError):
            await agent.file_open(str(tmp_path / "missing" / "x"), "w")
        with pytest.raises(UsageError):
            await agent.file_seek(handle, 0, "middle")


@pytest.mark.qemu_ga
async def test_exec_status_of_a_pid_the_agent_did_not_start(agent):
    with trio.fail_after(TIMEOUT), pytest.raises(AgentError, match="pid"):
        await agent.exec_status(os.getpid())


@pytest.mark.qemu_ga
async def test_devices_is_unavailable_on_linux(agent):
    with trio.fail_after(TIMEOUT), pytest.raises(CommandUnavailable) as caught:
        await agent.devices()
    assert caught.value.command == "guest-get-devices"


# The host's qemu-ga refuses all of these (BLOCKED_RPCS): the wrappers must
# refuse them locally, and the agent must refuse them when sent anyway.
BLOCKED_CALLS = [
    ("guest-fsfreeze-freeze", lambda a: a.fsfreeze_freeze(), None),
    ("guest-fsfreeze-freeze-list", lambda a: a.fsfreeze_freeze(["/"]), {"mountpoints": ["/"]}),
    ("guest-fstrim", lambda a: a.fstrim(), None),
    ("guest-set-time", lambda a: a.set_time(0), {"time": 0}),
    ("guest-exec", lambda a: a.exec("/bin/true"), {"path": "/bin/true"}),
    (
        "guest-set-user-password",
        lambda a: a.set_user_password("nobody", "x"),
        {"username": "nobody", "password": "eA==", "crypted": False},
    ),
    (
        "guest-set-vcpus",
        lambda a: a.set_vcpus([VCpu(0, True)]),
        {"vcpus": [{"logical-id": 0, "online": True}]},
    ),
    (
        "guest-set-memory-blocks",
        lambda a: a.set_memory_blocks([MemoryBlock(0, True)]),
        {"mem-blks": [{"phys-index": 0, "online": True}]},
    ),
    (
        "guest-ssh-add-authorized-keys",
        lambda a: a.ssh_add_authorized_keys("nobody", ["k"]),
        {"username": "nobody", "keys": ["k"]},
    ),
    (
        "guest-ssh-remove-authorized-keys",
        lambda a: a.ssh_remove_authorized_keys("nobody", ["k"]),
        {"username": "nobody", "keys": ["k"]},
    ),
    ("guest-shutdown", lambda a: a.shutdown(), {"mode": "powerdown"}),
    ("guest-suspend-disk", lambda a: a.suspend_disk(), None),
    ("guest-suspend-ram", lambda a: a.suspend_ram(), None),
    ("guest-suspend-hybrid", lambda a: a.suspend_hybrid(), None),
]


def test_blocked_calls_cover_blocked_rpcs():
    assert {command for command, _, _ in BLOCKED_CALLS} == set(BLOCKED_RPCS)


@pytest.mark.qemu_ga
@pytest.mark.parametrize(("command", "invoke", "arguments"), BLOCKED_CALLS)
async def test_blocked_commands(agent, command, invoke, arguments):
    with trio.fail_after(TIMEOUT):
        with pytest.raises(CommandUnavailable) as refused:
            await invoke(agent)
        assert refused.value.command == command
        assert "disabled" in refused.value.reason
        # Sent anyway (only because guest-info confirms the agent has it disabled):
        assert not (await agent.info()).commands[command].enabled
        with pytest.raises(CommandDisabled) as disabled:
            await agent.call(command, arguments, check=False)
        assert disabled.value.command == command
        await agent.ping()  # and the conversation goes on
    assert agent.frozen is False


@pytest.mark.qemu_ga
async def test_freeze_guard(agent):
    with trio.fail_after(TIMEOUT):
        agent.frozen = True  # as if we had frozen the guest
        with pytest.raises(FrozenStateViolation):
            await agent.osinfo()
        with pytest.raises(FrozenStateViolation):
            await agent.call("guest-get-osinfo", check=False)
        await agent.ping()
        assert (await agent.info()).version
        # The agent says thawed: the state follows it and commands flow again.
        assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
        assert agent.frozen is False
        assert (await agent.osinfo()).kernel_release == os.uname().release


# -------------------------------------------------- scripted transport, no I/O


class ScriptedAgent(AgentCommands):
    """Records what is sent; replies from ``replies`` (a value, or an exception)."""

    def __init__(self, replies: dict[str, Any]):
        super().__init__()
        self.replies = replies
        self.sent: list[tuple[str, Any]] = []
        names = {*replies, "guest-ping", "guest-info"}
        self.guest_info = {
            "version": "7.2.0",
            "supported_commands": [{"name": n, "enabled": True} for n in names],
        }

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        self.sent.append((command, arguments))
        await trio.lowlevel.checkpoint()
        if command == "guest-info":
            return self.guest_info
        reply = self.replies.get(command)
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            return await reply()
        return reply

    def commands_sent(self) -> list[str]:
        return [command for command, _ in self.sent]


async def test_freeze_and_thaw_track_state_and_refresh_info():
    agent = ScriptedAgent(
        {
            "guest-fsfreeze-freeze": 2,
            "guest-fsfreeze-freeze-list": 1,
            "guest-fsfreeze-thaw": 2,
            "guest-get-osinfo": {},
            "guest-fsfreeze-status": "frozen",
        }
    )
    with trio.fail_after(TIMEOUT):
        assert await agent.fsfreeze_freeze() == 2
        assert agent.frozen
        with pytest.raises(FrozenStateViolation):
            await agent.osinfo()
        with pytest.raises(FrozenStateViolation):
            await agent.fsfreeze_freeze()
        assert await agent.fsfreeze_thaw() == 2
        assert not agent.frozen
        assert await agent.fsfreeze_freeze(["/", "/var"]) == 1
        assert agent.sent[-1] == ("guest-fsfreeze-freeze-list", {"mountpoints": ["/", "/var"]})
        await agent.fsfreeze_thaw()
        # A freeze made by someone else shows in fsfreeze_status.
        assert await agent.fsfreeze_status() is FsfreezeStatus.FROZEN
        assert agent.frozen
    # guest-info is fetched again for each freeze (the cache is dropped by every
    # freeze, thaw and state change); thaw and status never wait for it.
    assert agent.commands_sent().count("guest-info") == 2


async def test_freeze_state_when_the_outcome_is_uncertain():
    agent = ScriptedAgent(
        {"guest-fsfreeze-freeze": AgentError("guest-fsfreeze-freeze", "GenericError", "failed")}
    )
    with trio.fail_after(TIMEOUT):
        with pytest.raises(AgentError):
            await agent.fsfreeze_freeze()
        assert not agent.frozen  # the agent answered: it thawed what it had frozen

    async def never_answers() -> None:
        await trio.sleep_forever()

    agent = ScriptedAgent({"guest-fsfreeze-freeze": never_answers, "guest-fsfreeze-thaw": 0})
    with trio.move_on_after(0.05) as scope:
        await agent.fsfreeze_freeze()
    assert scope.cancelled_caught
    assert agent.frozen  # no answer: the guest may be frozen, only thaw/status pass
    with trio.fail_after(TIMEOUT):
        with pytest.raises(FrozenStateViolation):
            await agent.fstrim()
        assert await agent.fsfreeze_thaw() == 0
    assert not agent.frozen


async def test_arguments_sent():
    agent = ScriptedAgent(
        {
            "guest-exec": {"pid": 42},
            "guest-exec-status": {
                "exited": True,
                "exitcode": 1,
                "out-data": base64.b64encode(b"out").decode(),
            },
            "guest-file-write": {"count": 3, "eof": False},
            "guest-set-user-password": {},
            "guest-ssh-add-authorized-keys": {},
            "guest-shutdown": None,
            "guest-set-vcpus": 1,
            "guest-fstrim": {"paths": []},
            "guest-set-time": {},
            "guest-file-read": {"count": 2, "buf-b64": "aGk=", "eof": True},
        }
    )
    with trio.fail_after(TIMEOUT):
        pid = await agent.exec(
            "/bin/sh", ["-c", "cat"], env={"A": "1"}, input_data=b"\x00in", capture_output=True
        )
        assert pid == 42
        status = await agent.exec_status(pid)
        assert status.stdout == b"out" and status.exit_code == 1
        await agent.file_write(7, b"abc")
        await agent.set_user_password("root", "pässword", crypted=False)
        await agent.ssh_add_authorized_keys("root", ["ssh-ed25519 AAAA"], reset=True)
        await agent.shutdown("reboot")
        assert await agent.set_vcpus([VCpu(1, False, can_offline=True)]) == 1
        assert await agent.fstrim(minimum=4096) == []
        await agent.set_time()
        assert (await agent.file_read(7, 2)).data == b"hi"
    sent = dict(agent.sent)
    assert sent["guest-exec"] == {
        "path": "/bin/sh",
        "arg": ["-c", "cat"],
        "env": ["A=1"],
        "input-data": base64.b64encode(b"\x00in").decode(),
        "capture-output": True,
    }
    assert sent["guest-exec-status"] == {"pid": 42}
    assert sent["guest-file-write"] == {"handle": 7, "buf-b64": "YWJj"}
    assert sent["guest-set-user-password"] == {
        "username": "root",
        "password": base64.b64encode("pässword".encode()).decode(),
        "crypted": False,
    }
    assert sent["guest-ssh-add-authorized-keys"] == {
        "username": "root",
        "keys": ["ssh-ed25519 AAAA"],
        "reset": True,
    }
    assert sent["guest-shutdown"] == {"mode": ShutdownMode.REBOOT.value}
    assert sent["guest-set-vcpus"] == {"vcpus": [{"logical-id": 1, "online": False}]}
    assert sent["guest-fstrim"] == {"minimum": 4096}
    assert sent["guest-set-time"] is None
    assert sent["guest-file-read"] == {"handle": 7, "count": 2}


@pytest.mark.parametrize(
    "invoke",
    [
        lambda a: a.shutdown("sleep"),
        lambda a: a.ssh_add_authorized_keys("root", "ssh-ed25519 AAAA"),
        lambda a: a.exec("/bin/true", "-x"),
        lambda a: a.exec("/bin/true", input_data="text"),
        lambda a: a.file_read(1, 0),
        lambda a: a.file_write(1, "text"),
        lambda a: a.file_open(b"/etc/hostname"),
        lambda a: a.set_time(1.5),
        lambda a: a.set_vcpus([{"logical-id": 0, "online": True}]),
        lambda a: a.fsfreeze_freeze("/"),
    ],
)
async def test_bad_arguments_are_refused_before_sending(invoke):
    agent = ScriptedAgent({})
    with trio.fail_after(TIMEOUT), pytest.raises(UsageError):
        await invoke(agent)
    assert agent.sent == []

"""Reply parsing: samples in qemu-ga 7.2's shapes (captured, then made generic),
hand-written replies for commands the host's qemu-ga must not run, live replies
from the real qemu-ga, and malformed replies."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import gagent
from gagent import types as t
from gagent.errors import ProtocolError
from gagent.fs_types import (
    DiskBusType,
    DiskInfo,
    DiskStatsInfo,
    FileRead,
    FileSeek,
    FilesystemInfo,
    FileWrite,
    FsfreezeStatus,
    FstrimResult,
)
from gagent.hw_types import (
    CpuStats,
    DeviceInfo,
    IpAddressType,
    MemoryBlock,
    MemoryBlockInfo,
    MemoryBlockResponse,
    MemoryBlockResult,
    NetworkInterface,
    VCpu,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def listing(cls: Any, command: str):
    return lambda value: t.list_of(cls, value, command)


# Shapes as the local qemu-ga 7.2 sends them (values made generic).
OSINFO = {
    "name": "Debian GNU/Linux",
    "kernel-release": "6.1.0-test",
    "version": "12 (bookworm)",
    "pretty-name": "Debian GNU/Linux 12 (bookworm)",
    "version-id": "12",
    "kernel-version": "#1 SMP PREEMPT_DYNAMIC",
    "machine": "x86_64",
    "id": "debian",
}
NETWORK = [
    {
        "name": "lo",
        "ip-addresses": [
            {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
            {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128},
        ],
        "statistics": {
            "tx-packets": 29,
            "tx-errs": 0,
            "rx-bytes": 3193,
            "rx-dropped": 0,
            "rx-packets": 29,
            "rx-errs": 0,
            "tx-bytes": 3193,
            "tx-dropped": 0,
        },
        "hardware-address": "00:00:00:00:00:00",
    },
    {"name": "ifb0", "hardware-address": "26:74:2d:9b:92:62"},
]
PCI = {"bus": 0, "slot": 2, "domain": 0, "function": 0}
ADDRESS = {
    "bus-type": "virtio",
    "bus": 0,
    "unit": 0,
    "pci-controller": PCI,
    "dev": "/dev/vda",
    "target": 0,
}
FSINFO = [
    {
        "name": "vda",
        "total-bytes": 108944293888,
        "mountpoint": "/",
        "disk": [ADDRESS],
        "used-bytes": 24935104512,
        "type": "ext4",
    }
]
DISKS = [{"name": "/dev/vda", "dependencies": [], "partition": False, "address": ADDRESS}]
VCPUS = [
    {"online": True, "can-offline": True, "logical-id": 1},
    {"online": True, "can-offline": False, "logical-id": 0},
]
MEMORY_BLOCKS = [{"online": True, "can-offline": True, "phys-index": 188}]
CPUSTATS = [
    {
        "cpu": 0,
        "guestnice": 0,
        "idle": 429730,
        "steal": 2080,
        "iowait": 510,
        "system": 24230,
        "guest": 0,
        "nice": 0,
        "irq": 0,
        "type": "linux",
        "user": 48260,
        "softirq": 270,
    }
]
DISKSTATS = [
    {
        "name": "vda",
        "major": 254,
        "minor": 0,
        "stats": {
            "discard-sectors": 896768,
            "write-ios": 32645,
            "discard-ios": 7682,
            "discard-ticks": 9,
            "weight-ticks": 66,
            "read-ios": 55298,
            "flush-ios": 5783,
            "write-sectors": 6077984,
            "write-merges": 27199,
            "write-ticks": 19080,
            "ios-pgr": 0,
            "read-sectors": 3802642,
            "read-merges": 10982,
            "total-ticks": 14672,
            "discard-merges": 66,
            "flush-ticks": 281,
            "read-ticks": 46459,
        },
    }
]
AGENT_INFO = {
    "version": "7.2.22",
    "supported_commands": [
        {"enabled": False, "name": "guest-exec", "success-response": True},
        {"enabled": True, "name": "guest-ping", "success-response": True},
        {"enabled": False, "name": "guest-shutdown", "success-response": False},
    ],
}

# Hand-written, for commands blocked on the host or absent on Linux.
EXEC_STATUS = {
    "exited": True,
    "exitcode": 0,
    "out-data": b64(b"hello\n"),
    "err-data": b64(b"\x00\xffwarn"),
    "out-truncated": True,
}
SMART_DISK = {
    "name": "/dev/nvme0n1",
    "partition": False,
    "dependencies": [],
    "alias": "data",
    "address": {
        **ADDRESS,
        "bus-type": "nvme",
        "serial": "SN1",
        "ccw-address": {"cssid": 0, "ssid": 1, "subchno": 2, "devno": 3},
    },
    "smart": {
        "type": "nvme",
        "critical-warning": 0,
        "temperature": 310,
        "data-units-read-lo": 5,
        "data-units-read-hi": 1,
    },
}
DEVICES = [
    {
        "driver-name": "Red Hat VirtIO Ethernet Adapter",
        "driver-date": 1600000000000000000,
        "driver-version": "100.85.104.20800",
        "id": {"type": "pci", "vendor-id": 6900, "device-id": 4096},
    },
    {"driver-name": "Generic"},
]
FSTRIM = {
    "paths": [
        {"path": "/", "trimmed": 4096, "minimum": 0},
        {"path": "/boot", "error": "not supported"},
    ]
}
SET_MEMORY_BLOCKS = [
    {"phys-index": 7, "response": "success"},
    {"phys-index": 8, "response": "operation-failed", "error-code": 16},
]
USERS = [
    {"user": "admin", "login-time": 1700000000.25},
    {"user": "x", "login-time": 17, "domain": "CORP"},
]

# (parser, sample) pairs, also used for mutation fuzzing below.
SAMPLES: list[tuple[Any, Any]] = [
    (t.AgentInfo.from_json, AGENT_INFO),
    (t.OSInfo.from_json, OSINFO),
    (listing(NetworkInterface, "guest-network-get-interfaces"), NETWORK),
    (listing(FilesystemInfo, "guest-get-fsinfo"), FSINFO),
    (listing(DiskInfo, "guest-get-disks"), [*DISKS, SMART_DISK]),
    (listing(VCpu, "guest-get-vcpus"), VCPUS),
    (listing(MemoryBlock, "guest-get-memory-blocks"), MEMORY_BLOCKS),
    (listing(CpuStats, "guest-get-cpustats"), CPUSTATS),
    (listing(DiskStatsInfo, "guest-get-diskstats"), DISKSTATS),
    (listing(DeviceInfo, "guest-get-devices"), DEVICES),
    (listing(MemoryBlockResult, "guest-set-memory-blocks"), SET_MEMORY_BLOCKS),
    (listing(t.GuestUser, "guest-get-users"), USERS),
    (t.ExecStatus.from_json, EXEC_STATUS),
    (FstrimResult.list_from_json, FSTRIM),
    (t.Timezone.from_json, {"zone": "CET", "offset": 3600}),
    (MemoryBlockInfo.from_json, {"size": 134217728}),
    (FileRead.from_json, {"count": 3, "buf-b64": b64(b"abc"), "eof": True}),
    (FileWrite.from_json, {"count": 3, "eof": False}),
    (FileSeek.from_json, {"position": 10, "eof": False}),
    (t.parse_host_name, {"host-name": "guest1"}),
    (t.parse_authorized_keys, {"keys": ["ssh-ed25519 AAAA test"]}),
    (FsfreezeStatus.from_json, "frozen"),
]


def test_agent_info():
    info = t.AgentInfo.from_json(AGENT_INFO)
    assert info.version == "7.2.22"
    assert info.enabled_commands == ["guest-ping"]
    assert info.commands["guest-shutdown"].success_response is False
    assert t.AgentInfo.from_json({"version": "1.0"}).commands == {}


def test_osinfo_and_optional_members():
    info = t.OSInfo.from_json(OSINFO)
    assert (info.kernel_release, info.pretty_name, info.version_id) == (
        "6.1.0-test",
        "Debian GNU/Linux 12 (bookworm)",
        "12",
    )
    assert info.variant is None
    assert t.OSInfo.from_json({}) == t.OSInfo()


def test_network_interfaces():
    lo, ifb = t.list_of(NetworkInterface, NETWORK, "guest-network-get-interfaces")
    assert lo.ip_addresses[0].address == "127.0.0.1"
    assert lo.ip_addresses[1].type is IpAddressType.IPV6
    assert lo.ip_addresses[1].prefix == 128
    assert lo.statistics is not None and lo.statistics.rx_bytes == 3193
    assert ifb == NetworkInterface("ifb0", "26:74:2d:9b:92:62", (), None)


def test_fsinfo_and_disks():
    (fs,) = t.list_of(FilesystemInfo, FSINFO, "guest-get-fsinfo")
    assert (fs.mountpoint, fs.type, fs.used_bytes) == ("/", "ext4", 24935104512)
    assert fs.disks[0].bus_type is DiskBusType.VIRTIO
    assert fs.disks[0].pci_controller.slot == 2 and fs.disks[0].dev == "/dev/vda"
    plain, nvme = t.list_of(DiskInfo, [*DISKS, SMART_DISK], "guest-get-disks")
    assert plain.smart is None and plain.dependencies == ()
    assert nvme.address is not None and nvme.address.ccw_address is not None
    assert nvme.address.ccw_address.devno == 3 and nvme.address.serial == "SN1"
    assert nvme.smart is not None and nvme.smart.type is DiskBusType.NVME
    assert nvme.smart.values["temperature"] == 310
    assert nvme.smart.counter("data-units-read") == (1 << 64) + 5
    assert nvme.smart.counter("media-errors") is None
    # A bus type newer than this module is kept as a string, not an error.
    newer = DiskInfo.from_json({**DISKS[0], "address": {**ADDRESS, "bus-type": "cxl"}})
    assert newer.address is not None and newer.address.bus_type == "cxl"


def test_statistics():
    (cpu,) = t.list_of(CpuStats, CPUSTATS, "guest-get-cpustats")
    assert (cpu.cpu, cpu.user, cpu.steal, cpu.type) == (0, 48260, 2080, "linux")
    minimal = CpuStats.from_json(
        {"type": "linux", "cpu": 1, "user": 1, "nice": 2, "system": 3, "idle": 4}
    )
    assert minimal.iowait is None and minimal.idle == 4
    (disk,) = t.list_of(DiskStatsInfo, DISKSTATS, "guest-get-diskstats")
    assert (disk.name, disk.major, disk.stats.read_ios, disk.stats.ios_pgr) == (
        "vda",
        254,
        55298,
        0,
    )
    assert (
        DiskStatsInfo.from_json({"name": "x", "major": 1, "minor": 2, "stats": {}}).stats.read_ios
        is None
    )


def test_vcpus_memory_and_their_requests():
    vcpus = t.list_of(VCpu, VCPUS, "guest-get-vcpus")
    assert vcpus[1] == VCpu(logical_id=0, online=True, can_offline=False)
    assert vcpus[0].to_json() == {"logical-id": 1, "online": True}
    (block,) = t.list_of(MemoryBlock, MEMORY_BLOCKS, "guest-get-memory-blocks")
    assert block.to_json() == {"phys-index": 188, "online": True}
    ok, failed = t.list_of(MemoryBlockResult, SET_MEMORY_BLOCKS, "guest-set-memory-blocks")
    assert ok.response is MemoryBlockResponse.SUCCESS and ok.error_code is None
    assert failed.response is MemoryBlockResponse.OPERATION_FAILED and failed.error_code == 16
    assert MemoryBlockInfo.from_json({"size": 128}).size == 128


def test_exec_status_decodes_output():
    status = t.ExecStatus.from_json(EXEC_STATUS)
    assert status.exited and status.exit_code == 0 and status.signal is None
    assert status.stdout == b"hello\n" and status.stderr == b"\x00\xffwarn"
    assert status.stdout_truncated and not status.stderr_truncated
    running = t.ExecStatus.from_json({"exited": False})
    assert running == t.ExecStatus(exited=False)
    killed = t.ExecStatus.from_json({"exited": True, "signal": 9})
    assert killed.exit_code is None and killed.signal == 9 and killed.stdout == b""


def test_small_replies():
    assert FsfreezeStatus.from_json("thawed") is FsfreezeStatus.THAWED
    assert FsfreezeStatus.from_json("frozen") is FsfreezeStatus.FROZEN
    assert t.Timezone.from_json({"offset": -18000}) == t.Timezone(offset=-18000, zone=None)
    assert t.parse_host_name({"host-name": "guest1"}) == "guest1"
    assert t.parse_authorized_keys({"keys": []}) == []
    first, second = FstrimResult.list_from_json(FSTRIM)
    assert first.trimmed == 4096 and second.error == "not supported" and second.trimmed is None
    users = t.list_of(t.GuestUser, USERS, "guest-get-users")
    assert users[0].login_time == 1700000000.25 and users[1].login_time == 17.0
    assert users[1].domain == "CORP"
    nic, generic = t.list_of(DeviceInfo, DEVICES, "guest-get-devices")
    assert (nic.pci_vendor_id, nic.pci_device_id, nic.id_type) == (6900, 4096, "pci")
    assert generic.driver_date is None and generic.pci_vendor_id is None
    read = FileRead.from_json({"count": 0, "buf-b64": "", "eof": True})
    assert read == FileRead(data=b"", eof=True)


@pytest.mark.parametrize(
    ("entry", "enabled", "success"),
    [
        ({"name": "a"}, False, True),  # both members are optional
        ({"name": "a", "enabled": True, "success-response": False}, True, False),
        ({"name": "a", "enabled": None, "success-response": None}, False, True),  # checked path
    ],
)
def test_agent_info_entries_fast_and_checked_paths_agree(entry, enabled, success):
    info = t.AgentInfo.from_json({"version": "1", "supported_commands": [entry]})
    assert info.commands == {"a": t.CommandInfo("a", enabled, success)}


@pytest.mark.parametrize(
    "entry",
    [{"name": "a", "enabled": 1}, {"name": 5}, {"name": "a", "success-response": "no"}, ["a"]],
)
def test_agent_info_malformed_entries_still_fail_checked(entry):
    with pytest.raises(ProtocolError):
        t.AgentInfo.from_json({"version": "1", "supported_commands": [entry]})


@pytest.mark.parametrize(
    ("parser", "value", "message"),
    [
        (t.OSInfo.from_json, [], "expected a JSON object, got array"),
        (t.OSInfo.from_json, {"kernel-release": 6}, "'kernel-release' should be str"),
        (t.AgentInfo.from_json, {"supported_commands": []}, "'version' is missing"),
        (t.AgentInfo.from_json, {"version": "1", "supported_commands": {}}, "JSON array"),
        (
            t.AgentInfo.from_json,
            {"version": "1", "supported_commands": [{"enabled": 1}]},
            "'name' is missing",
        ),
        (t.Timezone.from_json, {"offset": "0"}, "'offset' should be int"),
        (t.Timezone.from_json, {"offset": True}, "'offset' should be int, got boolean"),
        (t.ExecStatus.from_json, {"exited": True, "out-data": "!!"}, "invalid base64"),
        (t.ExecStatus.from_json, {"exited": "yes"}, "'exited' should be bool"),
        (t.ExecStatus.from_json, {}, "'exited' is missing"),
        (FsfreezeStatus.from_json, "error", "'error' is not one of 'thawed', 'frozen'"),
        (FsfreezeStatus.from_json, ["frozen"], "is not one of"),
        (
            FileRead.from_json,
            {"count": 4, "buf-b64": b64(b"abc"), "eof": False},
            "count says 4 bytes but buf-b64 holds 3",
        ),
        (FileRead.from_json, {"count": 3, "buf-b64": b64(b"abc")}, "'eof' is missing"),
        (
            listing(NetworkInterface, "guest-network-get-interfaces"),
            [
                {
                    "name": "x",
                    "ip-addresses": [
                        {"ip-address": "1.2.3.4", "prefix": 8, "ip-address-type": "ipv5"}
                    ],
                }
            ],
            "'ipv5' is not one of",
        ),
        (
            listing(NetworkInterface, "guest-network-get-interfaces"),
            [{"name": "x", "statistics": {"rx-bytes": 1}}],
            "'rx-packets' is missing",
        ),
        (
            listing(FilesystemInfo, "guest-get-fsinfo"),
            [{"name": "vda", "mountpoint": "/", "type": "ext4"}],
            "'disk' is missing",
        ),
        (listing(FilesystemInfo, "guest-get-fsinfo"), {"name": "vda"}, "JSON array"),
        (
            listing(DiskInfo, "guest-get-disks"),
            [{"name": "/dev/sda", "partition": False, "dependencies": [1]}],
            "must be strings",
        ),
        (
            listing(DiskInfo, "guest-get-disks"),
            [{**DISKS[0], "address": {**ADDRESS, "pci-controller": {"bus": 0}}}],
            "'domain' is missing",
        ),
        (
            listing(CpuStats, "guest-get-cpustats"),
            [{**CPUSTATS[0], "type": "windows"}],
            "unsupported statistics type",
        ),
        (
            listing(CpuStats, "guest-get-cpustats"),
            [{**CPUSTATS[0], "irq": 1.5}],
            "'irq' should be int",
        ),
        (
            listing(MemoryBlockResult, "guest-set-memory-blocks"),
            [{"phys-index": 1, "response": "maybe"}],
            "'maybe' is not one of",
        ),
        (
            listing(t.GuestUser, "guest-get-users"),
            [{"user": "x", "login-time": "now"}],
            "'login-time' should be float",
        ),
        (t.parse_host_name, {"hostname": "x"}, "'host-name' is missing"),
        (t.parse_authorized_keys, {"keys": [None]}, "must be strings"),
        (FstrimResult.list_from_json, {"paths": [{"trimmed": 1}]}, "'path' is missing"),
        (
            listing(DeviceInfo, "guest-get-devices"),
            [{"driver-name": "d", "id": {"type": "pci", "vendor-id": 1}}],
            "'device-id' is missing",
        ),
    ],
)
def test_bad_shapes_raise_protocol_error(parser, value, message):
    with pytest.raises(ProtocolError, match=message) as caught:
        parser(value)
    assert caught.value.command is not None and caught.value.command.startswith("guest-")


# ------------------------------------------------------------ property tests

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


@given(data=st.data())
def test_mutated_replies_parse_or_raise_protocol_error(data):
    """Any one member replaced by arbitrary JSON, or dropped: the parser either
    copes or raises ProtocolError -- never KeyError, TypeError, ValueError..."""
    parser, sample = data.draw(st.sampled_from(SAMPLES))
    value = copy.deepcopy(sample)
    path = data.draw(st.sampled_from(_paths(value)))
    replacement = data.draw(JSON)
    if not path:
        value = replacement
    else:
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
    try:
        parser(value)
    except ProtocolError:
        pass


@given(st.binary(max_size=4096), st.booleans())
def test_file_read_roundtrip(payload, eof):
    reply = json.loads(json.dumps({"count": len(payload), "buf-b64": b64(payload), "eof": eof}))
    assert FileRead.from_json(reply) == FileRead(data=payload, eof=eof)


@given(st.binary(max_size=2048), st.binary(max_size=2048), st.integers(-(2**31), 2**31))
def test_exec_status_roundtrip(out, err, code):
    status = t.ExecStatus.from_json(
        {"exited": True, "exitcode": code, "out-data": b64(out), "err-data": b64(err)}
    )
    assert (status.stdout, status.stderr, status.exit_code) == (out, err, code)


# ------------------------------------------------------------- live replies

LIVE = [
    ("guest-info", t.AgentInfo.from_json),
    ("guest-get-osinfo", t.OSInfo.from_json),
    ("guest-get-host-name", t.parse_host_name),
    ("guest-get-users", listing(t.GuestUser, "guest-get-users")),
    ("guest-get-timezone", t.Timezone.from_json),
    ("guest-network-get-interfaces", listing(NetworkInterface, "guest-network-get-interfaces")),
    ("guest-get-fsinfo", listing(FilesystemInfo, "guest-get-fsinfo")),
    ("guest-get-disks", listing(DiskInfo, "guest-get-disks")),
    ("guest-get-vcpus", listing(VCpu, "guest-get-vcpus")),
    ("guest-get-memory-blocks", listing(MemoryBlock, "guest-get-memory-blocks")),
    ("guest-get-memory-block-info", MemoryBlockInfo.from_json),
    ("guest-get-cpustats", listing(CpuStats, "guest-get-cpustats")),
    ("guest-get-diskstats", listing(DiskStatsInfo, "guest-get-diskstats")),
    ("guest-fsfreeze-status", FsfreezeStatus.from_json),
]


@pytest.mark.qemu_ga
async def test_live_replies_parse(qemu_ga):
    """Capture each read-only reply of the real qemu-ga raw, and parse it."""
    with trio.fail_after(20):
        async with gagent.open_agent(qemu_ga.socket_path) as agent:
            for command, parser in LIVE:
                raw = await agent.execute(command)
                parsed = parser(raw)
                if isinstance(raw, list):
                    assert len(parsed) == len(raw), command
                else:
                    assert parsed, command

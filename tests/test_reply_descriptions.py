"""The reply descriptions against qemu-ga 7.2's own schema, and decoded from generated replies.

The schema is read from qemu-ga-ref(7), the reference Debian's qemu-guest-agent
(7.2, installed by scripts/setup.sh) generates from qga/qapi-schema.json: every
member a description names must be the schema's, every member the schema
has must be described, and a member the description requires must be required
by the schema (tolerance of omissions is ours to add, never strictness).
Then hypothesis builds valid replies from the schema's shapes, and each decodes,
from bytes through the codec's path and from parsed JSON, to the same value.
"""

from __future__ import annotations

import base64
import enum
import functools
import gzip
import json
import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gagent import fs_types, hw_types
from gagent import types as t
from gagent.decoding import ReplyDecoder
from gagent.protocol import Reply
from gagent.replies import REPLY_TYPES, decoder_for

MODULES = {"types": t, "fs_types": fs_types, "hw_types": hw_types, "fsfreeze_state": fs_types}
MAN_PAGE = Path("/usr/share/man/man7/qemu-ga-ref.7.gz")

#: Each description and the schema type it describes; extra: members the schema's
#: union adds around it (the discriminator).
DESCRIBED: dict[type, tuple[str, set[str]]] = {
    t.AgentInfo: ("GuestAgentInfo", set()),
    t.CommandInfo: ("GuestAgentCommandInfo", set()),
    t.OSInfo: ("GuestOSInfo", set()),
    t.HostName: ("GuestHostName", set()),
    t.GuestUser: ("GuestUser", set()),
    t.Timezone: ("GuestTimezone", set()),
    t.ExecPid: ("GuestExec", set()),
    t.ExecStatus: ("GuestExecStatus", set()),
    t.SshAuthorizedKeys: ("GuestAuthorizedKeys", set()),
    hw_types.IpAddress: ("GuestIpAddress", set()),
    hw_types.InterfaceStatistics: ("GuestNetworkInterfaceStat", set()),
    hw_types.NetworkInterface: ("GuestNetworkInterface", set()),
    hw_types.VCpu: ("GuestLogicalProcessor", set()),
    hw_types.MemoryBlock: ("GuestMemoryBlock", set()),
    hw_types.MemoryBlockResult: ("GuestMemoryBlockResponse", set()),
    hw_types.MemoryBlockInfo: ("GuestMemoryBlockInfo", set()),
    hw_types.CpuStats: ("GuestLinuxCpuStats", {"type"}),
    hw_types.DeviceInfo: ("GuestDeviceInfo", set()),
    hw_types.DeviceId: ("GuestDeviceIdPCI", {"type"}),
    fs_types.PciAddress: ("GuestPCIAddress", set()),
    fs_types.CcwAddress: ("GuestCCWAddress", set()),
    fs_types.DiskAddress: ("GuestDiskAddress", set()),
    fs_types.FilesystemInfo: ("GuestFilesystemInfo", set()),
    fs_types.DiskSmart: ("GuestNVMeSmart", {"type"}),
    fs_types.DiskInfo: ("GuestDiskInfo", set()),
    fs_types.DiskStats: ("GuestDiskStats", set()),
    fs_types.DiskStatsInfo: ("GuestDiskStatsInfo", set()),
    fs_types.FstrimResult: ("GuestFilesystemTrimResult", set()),
    fs_types.FstrimResponse: ("GuestFilesystemTrimResponse", set()),
    fs_types.FileRead: ("GuestFileRead", set()),
    fs_types.FileWrite: ("GuestFileWrite", set()),
    fs_types.FileSeek: ("GuestFileSeek", set()),
}
ENUMS: dict[type, str] = {
    hw_types.IpAddressType: "GuestIpAddressType",
    hw_types.MemoryBlockResponse: "GuestMemoryBlockResponseType",
    fs_types.FsfreezeStatus: "GuestFsfreezeStatus",
    fs_types.DiskBusType: "GuestDiskBusType",
    fs_types.SeekWhence: "QGASeek",
}


def _schema() -> dict[str, dict[str, bool]]:
    """Type name -> {member: optional} (enum values: {value: False}), from the man page."""
    if not MAN_PAGE.is_file():
        pytest.skip(f"{MAN_PAGE} is missing: apt-get install qemu-guest-agent")
    return _read_schema()


@functools.cache
def _read_schema() -> dict[str, dict[str, bool]]:
    text = gzip.decompress(MAN_PAGE.read_bytes()).decode().replace("\\-", "-")
    types: dict[str, dict[str, bool]] = {}
    current: dict[str, bool] | None = None
    for line in text.splitlines():
        heading = re.match(r"\.SS \\fB(\w+)\\fP \((Object|Enum)\)", line)
        if heading:
            current = types.setdefault(heading[1], {})
            continue
        if line.startswith(".SS") and not line.startswith(".SS Members") and "Values" not in line:
            if not line.startswith(".SS \\fB"):
                continue
            current = None
        member = re.match(r"\.B \\fB([\w-]+)\\fP(?:: .*?)?( \(optional\))?$", line)
        if member and current is not None:
            current[member[1]] = bool(member[2])
    return types


def _wire_fields(cls: Any) -> list[tuple[str, Any, bool]]:
    """(JSON name, annotation, required) of each member a description reads."""
    hints = typing.get_type_hints(cls)
    required = len(cls.__struct_fields__) - len(cls.__struct_defaults__)
    return [
        (encoded, hints[name], index < required)
        for index, (encoded, name) in enumerate(
            zip(cls.__struct_encode_fields__, cls.__struct_fields__, strict=True)
        )
        if not encoded.startswith("gagent:")
    ]


@pytest.mark.parametrize("cls", list(DESCRIBED), ids=lambda c: c.__name__)
def test_member_names_are_the_schemas(cls: Any) -> None:
    name, extra = DESCRIBED[cls]
    schema = _schema()[name]
    fields = _wire_fields(cls)
    assert {f[0] for f in fields} == set(schema) | extra
    for member, _, required in fields:
        if required and member not in extra:
            assert not schema[member], f"{member} is optional in {name}, required here"


@pytest.mark.parametrize("kind", list(ENUMS), ids=lambda c: c.__name__)
def test_enum_values_are_the_schemas(kind: type[enum.Enum]) -> None:
    assert {m.value for m in kind} == set(_schema()[ENUMS[kind]])


def test_the_schema_is_read() -> None:
    """The control: the parser finds what the schema is known to hold."""
    schema = _schema()
    assert schema["GuestOSInfo"]["kernel-release"] is True
    assert schema["GuestAgentInfo"] == {"version": False, "supported_commands": False}
    assert len(schema) > 35


def test_every_typed_reply_is_described() -> None:
    for command, (module, name, shape, _) in REPLY_TYPES.items():
        if shape != "int":
            kind = getattr(MODULES[module], name)
            assert kind in DESCRIBED or kind in ENUMS, command


# ------------------------------------------------------- generated replies


def _strategy(kind: Any) -> st.SearchStrategy[Any]:
    """Valid JSON for ``kind`` (optional members present or not)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return _strategy(args[0])
    if origin in (list, tuple):
        return st.lists(_strategy(typing.get_args(kind)[0]), max_size=3)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(kind))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return st.sampled_from([m.value for m in kind])
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return _object(kind)
    return {
        str: st.text(max_size=8),
        int: st.integers(-(2**63), 2**64 - 1),
        float: st.floats(allow_nan=False, allow_infinity=False),
        bool: st.booleans(),
        bytes: st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode()),
    }[kind]


def _object(cls: Any) -> st.SearchStrategy[dict[str, Any]]:
    fields = _wire_fields(cls)
    if cls is hw_types.DeviceId:
        fields = [(n, a, n == "type" or r) for n, a, r in fields]
        fields = [(n, int if n != "type" else typing.Literal["pci"], True) for n, a, r in fields]
    required = {n: _strategy(a) for n, a, r in fields if r}
    optional = {n: _strategy(a) for n, a, r in fields if not r and n != "supported_commands"}
    if cls is t.AgentInfo:
        required["supported_commands"] = st.lists(_object(t.CommandInfo), max_size=4)
    if cls is fs_types.FileRead:
        optional.pop("count", None)
        return st.fixed_dictionaries(required, optional=optional).map(_with_count)
    return st.fixed_dictionaries(required, optional=optional)


def _with_count(reply: dict[str, Any]) -> dict[str, Any]:
    return {**reply, "count": len(base64.b64decode(reply["buf-b64"]))}


def _reply_strategy(command: str) -> st.SearchStrategy[Any]:
    module, name, shape, _ = REPLY_TYPES[command]
    if shape == "int":
        return st.integers(-(2**63), 2**64 - 1)
    kind = getattr(MODULES[module], name)
    return st.lists(_strategy(kind), max_size=3) if shape == "list" else _strategy(kind)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_generated_valid_replies_decode_the_same_from_bytes_and_from_json(data) -> None:
    command = data.draw(st.sampled_from(sorted(REPLY_TYPES)))
    value = data.draw(_reply_strategy(command))
    line = json.dumps({"return": value}).encode()
    decoder: ReplyDecoder = decoder_for(command)
    event = decoder(line)
    assert type(event) is Reply
    assert event.value == decoder.convert(json.loads(line)["return"])
    assert decoder(line) == event  # again (guest-info's memo), the same


LIVE = [
    "guest-info",
    "guest-get-osinfo",
    "guest-get-host-name",
    "guest-get-users",
    "guest-get-timezone",
    "guest-network-get-interfaces",
    "guest-get-fsinfo",
    "guest-get-disks",
    "guest-get-vcpus",
    "guest-get-memory-blocks",
    "guest-get-memory-block-info",
    "guest-get-cpustats",
    "guest-get-diskstats",
    "guest-fsfreeze-status",
    "guest-get-time",
]


@pytest.mark.qemu_ga
async def test_the_real_agents_replies_decode_alike_from_bytes_and_from_json(qemu_ga) -> None:
    """Each read-only reply of the real qemu-ga, typed through the codec (bytes) and
    converted from the value execute parsed: the same typed values."""
    import trio

    import gagent

    with trio.fail_after(30):
        async with gagent.open_agent(qemu_ga.socket_path) as agent:
            for command in LIVE:
                decoder = decoder_for(command)
                typed = await agent.execute_decoded(command, None, decoder)
                raw = await agent.execute(command)
                if command in ("guest-get-time", "guest-get-cpustats", "guest-get-diskstats"):
                    assert type(typed) is type(decoder.convert(raw)), command  # counters move
                    continue
                if command == "guest-network-get-interfaces":  # counters move
                    typed = [msgspec.structs.replace(i, statistics=None) for i in typed]
                    raw = [{**i, "statistics": None} for i in raw]
                if command == "guest-get-fsinfo":  # usage moves
                    typed = [msgspec.structs.replace(f, used_bytes=None) for f in typed]
                    raw = [{**f, "used-bytes": None} for f in raw]
                assert typed == decoder.convert(raw), command

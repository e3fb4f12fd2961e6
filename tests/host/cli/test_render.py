"""gagent.host.cli.render: JSON-able values, tables, sizes."""

from __future__ import annotations

import base64
import enum
import json
from dataclasses import dataclass, field

import pytest

from gagent.fs_types import FsfreezeStatus
from gagent.host.cli.render import dumps, format_table, human_bytes, render, to_jsonable


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


@dataclass(frozen=True)
class Address:
    ip: str
    prefix: int
    kind: Color = Color.RED


@dataclass(frozen=True)
class Nic:
    name: str
    addresses: tuple[Address, ...] = ()
    raw: bytes = b""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ to_jsonable


def test_to_jsonable_nested_dataclasses_enums_bytes():
    nic = Nic("eth0", (Address("10.0.0.2", 24), Address("::1", 128, Color.BLUE)), b"\x00\xffab",
              {1: Color.BLUE, "k": (1, 2)})  # fmt: skip
    assert to_jsonable(nic) == {
        "name": "eth0",
        "addresses": [
            {"ip": "10.0.0.2", "prefix": 24, "kind": "red"},
            {"ip": "::1", "prefix": 128, "kind": "blue"},
        ],
        "raw": base64.b64encode(b"\x00\xffab").decode(),
        "extra": {"1": "blue", "k": [1, 2]},
    }


def test_to_jsonable_scalars_and_containers():
    assert to_jsonable(None) is None
    assert to_jsonable(3) == 3 and to_jsonable(2.5) == 2.5 and to_jsonable("x") == "x"
    assert to_jsonable(True) is True
    assert to_jsonable(bytearray(b"hi")) == "aGk="
    assert to_jsonable(b"") == ""
    assert to_jsonable(Level.LOW) == 1
    assert to_jsonable(FsfreezeStatus.THAWED) == "thawed"
    assert sorted(to_jsonable({3, 1, 2})) == [1, 2, 3]
    assert to_jsonable(frozenset({"a"})) == ["a"]
    assert to_jsonable([(1, b"\x01")]) == [[1, "AQ=="]]


def test_to_jsonable_leaves_dataclass_types_alone():
    assert to_jsonable(Address) is Address


def test_dumps_is_json():
    text = dumps([Address("1.2.3.4", 32)])
    assert json.loads(text) == [{"ip": "1.2.3.4", "prefix": 32, "kind": "red"}]
    assert text.startswith("[\n  {")  # indented for people too
    assert list(json.loads(dumps({"b": 1, "a": 2}))) == ["b", "a"]  # order kept


# ------------------------------------------------------------------ human_bytes


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1024.0 KiB"),
        (1024**2, "1.0 MiB"),
        (5 * 1024**3 + 512 * 1024**2, "5.5 GiB"),
        (1024**4, "1.0 TiB"),
        (1024**5, "1024.0 TiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_human_bytes(count, text):
    assert human_bytes(count) == text


# ------------------------------------------------------------------ format_table


def test_format_table_aligns_columns_and_does_not_pad_the_last():
    table = format_table(
        ["name", "size", "note"],
        [("a", 1, "first"), ("longer-name", 12345, "x"), ("b", None, None)],
    )
    assert table.split("\n") == [
        "name         size   note",
        "a            1      first",
        "longer-name  12345  x",
        "b            -      -",
    ]


def test_format_table_strips_trailing_space_and_renders_cells():
    table = format_table(
        ["flag", "list", "color", "empty", "last"],
        [(True, ["a", "b"], Color.BLUE, [], ""), (False, (1,), Level.LOW, (), "")],
    )
    lines = table.split("\n")
    assert lines[1] == "yes   a,b   blue   -"
    assert lines[2] == "no    1     1      -"
    assert all(line == line.rstrip() for line in lines)


def test_format_table_nested_values():
    table = format_table(["addr", "d"], [(Address("10.0.0.1", 8), {"k": Color.RED})])
    assert table.split("\n")[1] == "ip=10.0.0.1 prefix=8 kind=red  k=red"


def test_format_table_headers_only_and_wide_header():
    assert format_table(["a", "b"], []) == "a  b"
    assert format_table(["wide-header", "b"], [("x", "y")]) == "wide-header  b\nx            y"


# ----------------------------------------------------------------------- render


def test_render_values():
    assert render(None) == "ok"
    assert render([]) == "(none)"
    assert render("thawed") == "thawed"
    assert render(FsfreezeStatus.FROZEN) == "frozen"
    assert render(42) == "42"
    assert render(["a", None, 3]) == "a\n-\n3"


def test_render_list_of_dataclasses_is_a_table():
    text = render([Address("10.0.0.1", 8), Address("fe80::1", 64, Color.BLUE)])
    assert text.split("\n") == [
        "ip        prefix  kind",
        "10.0.0.1  8       red",
        "fe80::1   64      blue",
    ]


def test_render_list_of_dicts_uses_the_first_keys():
    text = render([{"a": 1, "b": 2}, {"a": 3}])
    assert text.split("\n") == ["a  b", "1  2", "3  -"]


def test_render_dataclass_and_dict_are_field_tables():
    assert render(Address("1.1.1.1", 32)).split("\n") == [
        "field   value",
        "ip      1.1.1.1",
        "prefix  32",
        "kind    red",
    ]
    assert render({"frozen": 2}).split("\n") == ["key     value", "frozen  2"]

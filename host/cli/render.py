"""Turning results into text: human tables by default, JSON for machines."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["format_table", "human_bytes", "json_result", "render", "to_jsonable"]


def _is_record(value: Any) -> bool:
    """A dataclass instance, or a reply struct (gagent.decoding.Described)."""
    if isinstance(value, type):
        return False
    return dataclasses.is_dataclass(value) or hasattr(type(value), "__struct_fields__")


def _field_names(value: Any) -> list[str]:
    """A record's fields; a struct's ``_``-fields hold wire members, shown by others."""
    if dataclasses.is_dataclass(value):
        return [f.name for f in dataclasses.fields(value)]
    return [name for name in type(value).__struct_fields__ if not name.startswith("_")]


def to_jsonable(value: Any) -> Any:
    """Dataclasses, reply structs, enums and bytes as plain JSON values (bytes as base64)."""
    if _is_record(value):
        return {name: to_jsonable(getattr(value, name)) for name in _field_names(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Indented JSON; a result that is nothing (ping, shutdown) is ``{}``, as the agent's
    own empty reply, never ``null``."""
    return json.dumps(json_result(value), indent=2, sort_keys=False)


def json_result(value: Any) -> Any:
    """A command's result as JSON: :func:`to_jsonable`, with nothing as ``{}``."""
    return {} if value is None else to_jsonable(value)


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if _is_record(value):
        return " ".join(f"{k}={_cell(v)}" for k, v in to_jsonable(value).items())
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain left-aligned table; the last column is not padded."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *cells]:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def render(value: Any) -> str:
    """A readable form of any result: key/value lines or a table."""
    if value is None:
        return "ok"
    if isinstance(value, list):
        if not value:
            return "(none)"
        first = value[0]
        if _is_record(first):
            headers = _field_names(first)
            return format_table(headers, ([getattr(v, h) for h in headers] for v in value))
        if isinstance(first, dict):
            headers = list(first)
            return format_table(headers, ([v.get(h) for h in headers] for v in value))
        return "\n".join(_cell(v) for v in value)
    if _is_record(value):
        return format_table(["field", "value"], ((k, v) for k, v in _fields(value)))
    if isinstance(value, dict):
        return format_table(["key", "value"], value.items())
    return _cell(value)


def _fields(value: Any) -> list[tuple[str, Any]]:
    return [(name, getattr(value, name)) for name in _field_names(value)]

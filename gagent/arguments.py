"""Argument checks of the typed commands: a bad argument raises UsageError before
anything is sent, and bytes become base64 here."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from .errors import UsageError

__all__ = ["b64_argument", "instance_argument", "int_argument", "str_argument", "strings_argument"]


def int_argument(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name} must be an int, not {type(value).__name__}")
    return value


def str_argument(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{name} must be a str, not {type(value).__name__}")
    return value


def strings_argument(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, str | bytes):
        raise UsageError(f"{name} must be a list of strings, not a single string")
    return [str_argument(v, f"each of {name}") for v in values]


def b64_argument(data: Any, name: str) -> str:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError(f"{name} must be bytes, not {type(data).__name__}")
    return base64.b64encode(data).decode("ascii")


def instance_argument(cls: type, value: Any, name: str) -> Any:
    if not isinstance(value, cls):
        raise UsageError(f"each of {name} must be a {cls.__name__}, not {type(value).__name__}")
    return value

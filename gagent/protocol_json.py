"""The JSON of the QGA wire on the standard library: the bytes of a request, and a
reply line parsed (for replies no typed decoder was given, and sync replies).

A part of the sans-IO codec (:mod:`gagent.protocol`, which re-exports
:func:`encode_command`), kept apart to keep modules small.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ProtocolError, UsageError

__all__ = ["encode_command", "loads_or_none", "parse_object"]


_NO_ARGUMENT_REQUESTS: dict[str, bytes] = {}


def encode_command(name: str, arguments: dict[str, Any] | None = None) -> bytes:
    """The bytes of one request (no state, usable by any transport)."""
    if arguments is None:
        # guest-ping, guest-info...: the same bytes every time (bounded: names are few).
        cached = _NO_ARGUMENT_REQUESTS.get(name)
        if cached is not None:
            return cached
        if len(_NO_ARGUMENT_REQUESTS) < 256 and isinstance(name, str) and name:
            encoded = _encode(name, None)
            _NO_ARGUMENT_REQUESTS[name] = encoded
            return encoded
    return _encode(name, arguments)


def _encode(name: str, arguments: dict[str, Any] | None) -> bytes:
    if not isinstance(name, str) or not name:
        raise UsageError(f"command name must be a non-empty string, not {name!r}")
    message: dict[str, Any] = {"execute": name}
    if arguments is not None:
        if not isinstance(arguments, dict):
            raise UsageError(
                f"arguments of {name} must be a JSON object, not {type(arguments).__name__}"
            )
        message["arguments"] = arguments
    try:
        # allow_nan=False: NaN/Infinity are not JSON and qemu-ga rejects them.
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"arguments of {name} are not JSON-serialisable: {exc}") from None
    return text.encode() + b"\n"


def loads_or_none(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def parse_object(line: bytes, command: str | None) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except RecursionError:
        # json gives up on deep nesting with RecursionError, not ValueError.
        raise ProtocolError(
            f"reply to {command} is nested too deeply", data=line, command=command
        ) from None
    except ValueError as exc:  # includes UnicodeDecodeError
        raise ProtocolError(
            f"reply to {command} is not JSON ({exc.__class__.__name__}: {exc})",
            data=line,
            command=command,
        ) from None
    if not isinstance(value, dict):
        raise ProtocolError(f"reply to {command} is not a JSON object", data=line, command=command)
    return value

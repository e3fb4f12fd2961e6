"""The decode layer: reply types described once, decoded straight from the reply's bytes.

Each reply type is a frozen :class:`Described` struct (msgspec): its annotations
are the description (JSON member names are the field names with ``-`` for
``_``, or given with ``field(name=...)``; a default makes a member optional;
enums, ``bytes`` for base64 members), and decoding and validation follow from
it.  A typed command hands the codec a :class:`ReplyDecoder`, which decodes the
whole reply line (``{"return": ...}`` or ``{"error": ...}``) in one pass into
those structs.  ``from_json`` converts a value already parsed (libvirt's
transport, tests) with the same description.

A reply of the wrong shape raises :class:`~gagent.errors.ProtocolError` naming
the command, in the words the hand-written parsers used ("member 'version' is
missing", "member 'offset' should be int, got string", "'ipv5' is not one of
'ipv4', 'ipv6'", "invalid base64 in member 'out-data'").

Only the host side imports this module (msgspec); the guest helper never does.
"""

from __future__ import annotations

import enum
import functools
import re
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import msgspec
from msgspec import UNSET

from .errors import ProtocolError

__all__ = ["Described", "ReplyDecoder", "convert", "shape_error"]


class Described(msgspec.Struct, frozen=True, rename="kebab", gc=False, repr_omit_defaults=False):
    """Base of the reply types: frozen, slotted, JSON members spelled with ``-``.

    A public field a type makes itself in ``__post_init__`` (AgentInfo.commands,
    from the ``supported_commands`` array) has a JSON name starting with
    ``gagent:``, which no agent sends; the wire member it is made from is a field
    whose name starts with ``_`` (renderers skip those).
    """

    #: The command whose reply (or part of it) this is, for error messages.
    command: ClassVar[str] = "reply"
    #: Messages for values outside a ``Literal`` member, by field name.
    unknown_value: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_json(cls, value: Any, what: str | None = None) -> Any:
        """An already-parsed JSON value as this type (ProtocolError when it does not fit)."""
        return convert(value, cls, what or cls.command)


def shape_error(what: str, message: str) -> ProtocolError:
    """A ProtocolError for a reply of the wrong shape; ``what`` starts with the command."""
    return ProtocolError(f"{what}: {message}", command=what.split(" ", 1)[0])


def convert(value: Any, kind: Any, what: str) -> Any:
    """``value`` (parsed JSON) checked and converted to ``kind`` by its description."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise shape_error(what, _explain(str(exc), kind, "$", value)) from None


class ReplyDecoder:
    """Decodes one command's whole reply line into ``kind`` (then ``unwrap``), in one pass.

    Called by the codec with the line's bytes; returns the codec's Reply or
    ErrorReply event.  ``convert`` does the same for a ``return`` value that a
    transport already parsed.
    """

    __slots__ = ("_decode", "_memo", "command", "error_reply", "kind", "memo", "reply", "unwrap")

    def __init__(
        self,
        command: str,
        kind: Any,
        unwrap: Callable[[Any], Any] | None = None,
        *,
        memo: bool = False,
    ) -> None:
        from .protocol import ErrorReply, Reply  # the codec's events (no cycle at import)

        self.command = command
        self.kind = kind
        self.unwrap = unwrap
        self.reply = Reply
        self.error_reply = ErrorReply
        envelope = msgspec.defstruct(
            "Envelope",
            [
                ("value", kind | msgspec.UnsetType, msgspec.field(name="return", default=UNSET)),
                ("error", Any, UNSET),
            ],
            gc=False,
        )
        # the envelope is made here: to a type checker its fields are unknown
        self._decode: Callable[[bytes], Any] = msgspec.json.Decoder(envelope).decode
        #: Keep the last reply: a line equal to it gives the same event, undecoded.
        self.memo = memo
        self._memo: tuple[bytes, Any] = (b"", None)

    def __call__(self, line: bytes) -> Any:
        memo = self._memo
        if memo[0] == line:
            return memo[1]
        event = self._decode_line(line)
        if self.memo and type(event) is self.reply:
            self._memo = (line, event)
        return event

    def _decode_line(self, line: bytes) -> Any:
        try:
            envelope = self._decode(line)
        except msgspec.ValidationError as exc:
            message = str(exc)
            if " - at `" not in message:  # the line itself is no JSON object
                raise ProtocolError(
                    f"reply to {self.command} is not a JSON object", data=line, command=self.command
                ) from None
            explained = _explain(message, self.kind, "$.return", _return_value(line))
            raise shape_error(self.command, explained) from None
        except msgspec.DecodeError as exc:
            raise ProtocolError(
                f"reply to {self.command} is not JSON ({exc})", data=line, command=self.command
            ) from None
        except RecursionError:
            raise ProtocolError(
                f"reply to {self.command} is nested too deeply", data=line, command=self.command
            ) from None
        value = envelope.value
        if value is not msgspec.UNSET:
            return self.reply(value if self.unwrap is None else self.unwrap(value))
        if envelope.error is not msgspec.UNSET:
            return self.error_reply(envelope.error)
        raise ProtocolError(
            f"reply to {self.command} has neither 'return' nor 'error'",
            data=line,
            command=self.command,
        )

    def convert(self, value: Any) -> Any:
        value = convert(value, self.kind, self.command)
        return value if self.unwrap is None else self.unwrap(value)


# ------------------------------------------------------------ error messages

_AT = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_JSON_NAMES = {"int": "number", "float": "number", "bool": "boolean", "str": "string"}
_PLURALS = {"str": "strings", "int": "integers", "bool": "booleans", "float": "numbers"}


def _return_value(line: bytes) -> Any:
    """The ``return`` member of a reply that failed to decode (error path only)."""
    import json

    try:
        return json.loads(line).get("return")
    except (ValueError, RecursionError, AttributeError):
        return None


def _explain(message: str, kind: Any, root: str, value: Any) -> str:
    """msgspec's ``message - at `$.path``` in the words of gagent's errors.

    A required member missing from the object where the error is is named
    first, whatever member msgspec met first (JSON objects have no order).
    """
    match = _AT.match(message)
    assert match is not None  # the pattern matches any text
    text, path = match["message"], match["path"] or "$"
    if path.startswith(root):
        path = "$" + path[len(root) :]
    steps = [m[1] if m[1] is not None else m[2] for m in _STEP.finditer(path[1:])]
    owner, name, target = _resolve(kind, steps)
    where = f"member '{name}'" if name else "the reply"
    if steps and steps[-1].isdigit():
        where = f"item {steps[-1]} of {where}"
    if text.startswith("Object missing required field "):
        return f"member '{text.rpartition(' ')[2].strip('`')}' is missing"
    missing = _missing_member(value, kind, steps)
    if missing is not None:
        return f"member '{missing}' is missing"
    if text.startswith("Invalid base64"):
        return f"invalid base64 in {where}"
    if text.startswith("Invalid enum value "):
        value = text[len("Invalid enum value ") :]
        if owner is not None and name in getattr(owner, "unknown_value", {}):
            return owner.unknown_value[name].format(value=value)
        return f"{value} is not one of {_allowed(target)}"
    expected = re.match(r"Expected `(\w+)(?: \| null)?`, got `(\w+)`", text)
    if expected is None:
        return text if not name else f"{text} (member '{name}')"
    want, got = expected[1], _JSON_NAMES.get(expected[2], expected[2])
    if _is_choice(target):
        return f"got {got}, which is not one of {_allowed(target)}"
    if want in ("object", "array"):
        return f"{where}: expected a JSON {want}, got {got}"
    if steps and steps[-1].isdigit() and name:
        return f"the members of '{name}' must be {_PLURALS.get(want, want)}, got {got}"
    return f"{where} should be {want}, got {got}"


def _resolve(kind: Any, steps: list[str]) -> tuple[Any, str | None, Any]:
    """(struct owning the last named member, that member's JSON name, type at the path)."""
    owner: Any = None
    name: str | None = None
    for step in steps:
        kind = _unwrap_optional(kind)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            fields = dict(zip(kind.__struct_encode_fields__, kind.__struct_fields__, strict=True))
            attribute = fields.get(step)
            if attribute is None:
                return owner, name, None
            owner, name = kind, step
            kind = _hints(kind).get(attribute)
        else:
            args = typing.get_args(kind)
            kind = args[-1] if args else None  # list[T], tuple[T, ...], dict[K, T]
            if kind is Ellipsis:
                kind = args[0]
    return owner, name, _unwrap_optional(kind)


def _missing_member(value: Any, kind: Any, steps: list[str]) -> str | None:
    """A required member absent from the innermost object on the path, if any."""
    found = None
    for step in [*steps, None]:
        kind = _unwrap_optional(kind)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct) and isinstance(value, dict):
            for encoded, _attribute, default in zip(
                kind.__struct_encode_fields__,
                kind.__struct_fields__,
                (msgspec.NODEFAULT,) * (len(kind.__struct_fields__) - len(kind.__struct_defaults__))
                + kind.__struct_defaults__,
                strict=True,
            ):
                if default is msgspec.NODEFAULT and value.get(encoded) is None:
                    found = encoded
                    break
            else:
                found = None
        if step is None:
            break
        _, _, kind = _resolve(kind, [step])
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return found
    return found


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(kind: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(kind) if a is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _is_choice(kind: Any) -> bool:
    return (isinstance(kind, type) and issubclass(kind, enum.Enum)) or (
        typing.get_origin(kind) is Literal
    )


def _allowed(kind: Any) -> str:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return ", ".join(repr(m.value) for m in kind)
    if typing.get_origin(kind) is Literal:
        return ", ".join(repr(v) for v in typing.get_args(kind))
    return "the values the schema allows"

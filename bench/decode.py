"""Decoding typed replies: msgspec (gagent's way) against a stdlib decoder of the same description.

Real replies of the local qemu-ga, captured once, decoded many times, per reply:

* json.loads      - the parse alone (no types, no checks): what any client pays
* stdlib          - json.loads, then a walk driven by the same description (the
                    structs' fields, JSON names, defaults, enums, nested types)
                    that checks every member and builds the same structs
* msgspec         - gagent.decoding.ReplyDecoder: the whole reply line decoded and
                    checked in one pass into the structs (guest-info's memo off)

The stdlib walk is generous to the stdlib: it builds msgspec structs, which are
cheaper to construct than frozen dataclasses (object.__setattr__ per field).

Run: .venv/bin/python bench/decode.py [--quick]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import enum
import json
import tempfile
import time
import types
import typing
from typing import Any

import msgspec
import trio
from _common import make_parser, print_environment

import gagent
from gagent.decoding import ReplyDecoder, shape_error
from gagent.localagent import start_local_qemu_ga
from gagent.replies import REPLY_TYPES, decoder_for

COMMANDS = [
    "guest-info",
    "guest-get-osinfo",
    "guest-network-get-interfaces",
    "guest-get-fsinfo",
    "guest-get-cpustats",
    "guest-get-diskstats",
]

_PLAIN = {str: str, int: int, float: (int, float), bool: bool}


def stdlib_decoder(kind: Any, what: str) -> Any:
    """A decoder of ``kind`` from parsed JSON, compiled once from the description."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = stdlib_decoder(next(a for a in typing.get_args(kind) if a is not type(None)), what)
        return lambda v: None if v is None else inner(v)
    if typing.get_origin(kind) in (list, tuple):
        item = stdlib_decoder(typing.get_args(kind)[0], what)
        make = list if typing.get_origin(kind) is list else tuple

        def sequence(value: Any) -> Any:
            if type(value) is not list:
                raise shape_error(what, "expected a JSON array")
            return make([item(v) for v in value])

        return sequence
    if typing.get_origin(kind) is dict:  # AgentInfo.commands: made, never on the wire
        return dict
    if typing.get_origin(kind) is typing.Literal:
        return lambda v: v
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        hints = typing.get_type_hints(kind)
        required = len(kind.__struct_fields__) - len(kind.__struct_defaults__)
        fields = [
            (encoded, name, stdlib_decoder(hints[name], what), index < required)
            for index, (encoded, name) in enumerate(
                zip(kind.__struct_encode_fields__, kind.__struct_fields__, strict=True)
            )
        ]

        def struct(value: Any) -> Any:
            if type(value) is not dict:
                raise shape_error(what, "expected a JSON object")
            kwargs = {}
            for encoded, name, decode, needed in fields:
                member = value.get(encoded)
                if member is None:
                    if needed:
                        raise shape_error(what, f"member '{encoded}' is missing")
                    continue
                kwargs[name] = decode(member)
            return kind(**kwargs)

        return struct
    if kind is bytes:
        import base64

        return lambda v: base64.b64decode(v, validate=True)
    plain = _PLAIN[kind]

    def scalar(value: Any) -> Any:
        if not isinstance(value, plain) or (kind is not bool and type(value) is bool):
            raise shape_error(what, f"should be {kind.__name__}")
        return value

    return scalar


async def capture(path: str) -> dict[str, bytes]:
    async with gagent.open_agent(path) as agent:
        return {c: json.dumps({"return": await agent.execute(c)}).encode() for c in COMMANDS}


def per_call(function: Any, line: bytes, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            function(line)
        best = min(best, (time.perf_counter() - start) / n)
    return best


def main() -> int:
    args = make_parser(__doc__.splitlines()[0]).parse_args()
    n = 300 if args.quick else 2000
    with tempfile.TemporaryDirectory(prefix="gagent-bench-") as tmp:
        agent = start_local_qemu_ga(tmp)
        try:
            lines = trio.run(capture, str(agent.socket_path))
        finally:
            agent.stop()
    print_environment("decode: one reply line to typed values (best of 5 batches)", {"n": n})
    header = f"{'reply':30} {'bytes':>6} {'json.loads':>11} {'stdlib':>8} {'msgspec':>8}"
    print(f"   {header}  stdlib/msgspec")
    for command, line in lines.items():
        shared = decoder_for(command)
        typed = ReplyDecoder(command, shared.kind, shared.unwrap)  # no memo
        walk = stdlib_decoder(shared.kind, command)
        assert walk(json.loads(line)["return"]) == typed(line).value, command
        loads = per_call(json.loads, line, n)
        stdlib = per_call(lambda b, walk=walk: walk(json.loads(b)["return"]), line, n)
        native = per_call(typed, line, n)
        print(
            f"   {command:30} {len(line):6} {loads * 1e6:9.1f}us {stdlib * 1e6:6.1f}us "
            f"{native * 1e6:6.1f}us  {stdlib / native:5.1f}x"
        )
    assert set(COMMANDS) <= set(REPLY_TYPES)
    return 0


if __name__ == "__main__":
    sys.exit(main())

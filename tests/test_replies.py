"""The decode layer loads per type group, on first use: a one-shot ping loads none of it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gagent.errors import ProtocolError
from gagent.protocol import ErrorReply
from gagent.replies import REPLY_TYPES, decoder_for, untyped_decoder

TIMEOUT = 60
DECODE_LAYER = {"msgspec", "gagent.decoding", "gagent.types", "gagent.fs_types", "gagent.hw_types"}

REPORT = """
import json, sys
{body}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "msgspec" or m in {names})))
"""


def loaded_after(body: str) -> set[str]:
    script = REPORT.format(body=body, names=sorted(DECODE_LAYER))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    return {
        name.split(".")[0] if name.startswith("msgspec") else name
        for name in json.loads(proc.stdout.splitlines()[-1])
    }


def test_the_command_layer_imports_no_decoding() -> None:
    assert loaded_after("import gagent.sync, gagent.commands, gagent.replies") == set()


def test_a_typed_reply_imports_its_own_group_only() -> None:
    loaded = loaded_after("from gagent.replies import decoder_for; decoder_for('guest-get-osinfo')")
    assert loaded == {"msgspec", "gagent.decoding", "gagent.types"}
    loaded = loaded_after("from gagent.replies import decoder_for; decoder_for('guest-get-disks')")
    assert "gagent.fs_types" in loaded and "gagent.hw_types" not in loaded


@pytest.mark.qemu_ga
def test_a_one_shot_socket_ping_loads_no_decoding(qemu_ga) -> None:
    body = (
        "from gagent.host.cli import main\n"
        f"code = main(['agent', '--socket', {str(qemu_ga.socket_path)!r}, 'ping'])\n"
        "assert code == 0, code\n"
    )
    assert loaded_after(body) == set()


def test_decoders_are_made_once_and_shared() -> None:
    assert decoder_for("guest-info") is decoder_for("guest-info")


@pytest.mark.parametrize("command", sorted(REPLY_TYPES))
def test_every_listed_reply_has_a_decoder(command: str) -> None:
    assert decoder_for(command).command == command


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[" * 5000 + b"]" * 5000, "is not a JSON object"),
        (b'{"return": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply|expected a JSON"),
        (b"<html>", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"greeting": 1}', "neither 'return' nor 'error'"),
        (b'{"return": {"version": 7}}', "member 'version' should be str, got number"),
    ],
)
def test_a_bad_reply_line_is_a_protocol_error_naming_the_command(line: bytes, message: str) -> None:
    for decoder in (decoder_for("guest-info"), untyped_decoder("guest-info")):
        if "version" in message and decoder is untyped_decoder("guest-info"):
            continue  # plain JSON has no shape to break
        with pytest.raises(ProtocolError, match=message) as caught:
            decoder(line)
        assert caught.value.command == "guest-info"


def test_an_error_reply_decodes_to_the_codecs_error_event() -> None:
    error = {"class": "CommandNotFound", "desc": "no such command"}
    line = json.dumps({"error": error}).encode()
    for decoder in (decoder_for("guest-info"), untyped_decoder("guest-info")):
        assert decoder(line) == ErrorReply(error)

"""The decode layer loads per type group, on first use: a one-shot ping loads none of it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gagent.replies import REPLY_TYPES, decoder_for

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

"""``gagent snapshot group`` in-process through gagent.host.cli.main, against libvirt's
test driver (one node, a domain per member, each with its channel on a unix socket) and
the freezable fake agent served on each socket from a thread of its own.

The test driver cannot make disk-only snapshots: every member's snapshot call fails
there (exit 8), which is the "a member failed in the window" case at the command line.
The protocol itself, with snapshots that succeed: tests/host/test_group_snapshot.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeagent import Delay
from test_freeze import FREEZE, STATUS, THAW, FreezableFake
from test_freeze_cli import registered, serving, signal_when  # noqa: F401  (autouse)
from test_freeze_cli import run as run_cli

from gagent.errors import UsageError
from gagent.host.channel import GAGENT_CHANNEL
from gagent.host.cli.group_snapshot import parse_members


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """main(argv): the fake agents serve no guest files, so each member's preflight says
    once that its dead-man's deadline could not be read (test_freeze_findings holds it)."""
    code, out, err = run_cli(capsys, *argv)
    lines = err.splitlines(keepends=True)
    return code, out, "".join(line for line in lines if "freeze dead-man's deadline" not in line)


def domain_xml(name: str, sock: Path) -> str:
    return f"""<domain type='test'><name>{name}</name><memory>1048576</memory>
<os><type>hvm</type></os><devices>
<disk type='file' device='disk'><source file='/img/{name}.raw'/>
<target dev='vda' bus='virtio'/></disk>
<controller type='virtio-serial' index='0'/>
<channel type='unix'><source mode='bind' path='{sock}'/>
<target type='virtio' name='{GAGENT_CHANNEL}'/></channel>
</devices></domain>"""


@contextlib.contextmanager
def served_group(tmp_path: Path, **fakes: FreezableFake | None) -> Iterator[str]:
    """A test-driver node with a domain per keyword; its fake agent served (None: no
    agent listens on its socket); yields the node's URI."""
    node = tmp_path / "node.xml"
    node.write_text(
        "<node>" + "".join(domain_xml(n, tmp_path / f"{n}.sock") for n in fakes) + "</node>"
    )
    with serving({tmp_path / f"{n}.sock": fake for n, fake in fakes.items() if fake is not None}):
        yield f"test://{node}"


def test_members_parse(tmp_path: Path) -> None:
    listed = tmp_path / "members"
    listed.write_text("# the shop\ndb=qemu+ssh://h1/system:vm1\n\nweb  # same host\n")
    assert parse_members(["a", "qemu:///system:b", "c=test:///default:vm9", f"@{listed}"],
                         "qemu:///x") == [
        ("a", "a", "qemu:///x"), ("b", "b", "qemu:///system"), ("c", "vm9", "test:///default"),
        ("db", "vm1", "qemu+ssh://h1/system"), ("web", "web", "qemu:///x"),
    ]  # fmt: skip
    for bad in ("qemu:///system", "x=", "qemu:///system:a/b"):
        with pytest.raises(UsageError):
            parse_members([bad], None)
    with pytest.raises(UsageError, match="cannot read member file"):
        parse_members([f"@{tmp_path / 'nope'}"], None)


def test_a_failing_snapshot_thaws_every_member_and_reports_each(capsys, tmp_path: Path) -> None:
    fakes = {"db": FreezableFake(), "web": FreezableFake()}
    with served_group(tmp_path, **fakes) as uri:
        code, out, err = run(capsys, "snapshot", "group", "create", "g1", "db", "web",
                             "-c", uri, "--json")  # fmt: skip
        assert code == 8, err  # libvirt's refusal, member by member
        assert err.startswith("gagent: error: creating a snapshot of ")
        record = json.loads(out)
        assert record["consistency"] == "failed" and record["policy"] == "require"
        assert {m["label"]: m["state"] for m in record["members"]} == {
            "db": "failed", "web": "failed",
        }  # fmt: skip
        assert all("unsupported flags" in m["error"] for m in record["members"])
        for fake in fakes.values():  # both froze, both were thawed and confirmed
            assert fake.commands[-3:] == [FREEZE, THAW, STATUS] and fake.state == "thawed"
        code, out, _ = run(capsys, "snapshot", "group", "list")
        header, row = out.splitlines()
        assert header.split()[:3] == ["name", "created", "consistency"]
        assert row.startswith("g1 ") and "failed" in row and "db=failed web=failed" in row
        code, out, _ = run(capsys, "snapshot", "group", "list", "--json")
        assert [g["name"] for g in json.loads(out)] == ["g1"]
        assert run(capsys, "snapshot", "group", "delete", "g1") == (
            0, "deleted group snapshot g1\n", ""
        )  # fmt: skip
        assert run(capsys, "snapshot", "group", "list")[1] == "(no group snapshots)\n"
        code, _, err = run(capsys, "snapshot", "group", "delete", "g1")
        assert code == 2 and "no group snapshot named 'g1'" in err


@pytest.mark.parametrize("json_where", ["after", "before"])
def test_group_delete_json(capsys, tmp_path: Path, json_where: str) -> None:
    with served_group(tmp_path, db=FreezableFake()) as uri:
        assert run(capsys, "snapshot", "group", "create", "g1", "db", "-c", uri)[0] == 8
        before, after = (["--json"], []) if json_where == "before" else ([], ["--json"])
        code, out, err = run(capsys, *before, "snapshot", "group", "delete", "g1", *after)
        assert (code, err) == (0, "")
        # the member's snapshot failed: nothing of it to remove, the record goes
        assert json.loads(out) == {"name": "g1", "deleted": True, "removed": [], "left": []}
        assert run(capsys, "snapshot", "group", "list", "--json")[1] == "[]\n"


def test_require_freezes_nothing_when_a_member_is_unreachable(capsys, tmp_path: Path) -> None:
    db = FreezableFake()
    with served_group(tmp_path, db=db, web=None) as uri:
        code, out, err = run(capsys, "snapshot", "group", "create", "g1", "db", "web", "-c", uri)
    assert code == 3, err  # EXIT_CODES: agent unreachable
    assert "web" in err and FREEZE not in db.commands
    assert "web: failed" in out and "db: not-taken" in out


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_in_the_freezes_thaws_every_member(capsys, tmp_path, signum, code):
    slow = FreezableFake().on(FREEZE, Delay(1.5))
    fakes = {"db": FreezableFake(), "web": slow}
    with served_group(tmp_path, **fakes) as uri, signal_when(slow, FREEZE, signum):
        got, _, err = run(capsys, "snapshot", "group", "create", "g1", "db", "web", "-c", uri)
    assert (got, err.splitlines()[-1]) == (code, f"gagent: interrupted by {signum.name}")
    for fake in fakes.values():  # (the slow one's thaw waited, shielded, behind its freeze)
        assert FREEZE in fake.commands and fake.commands[-2:] == [THAW, STATUS]
        assert fake.state == "thawed"


def test_the_deadline_thaws_every_member(capsys, tmp_path: Path) -> None:
    slow = FreezableFake().on(FREEZE, Delay(6))
    fakes = {"db": FreezableFake(), "web": slow}
    with served_group(tmp_path, **fakes) as uri:
        code, _, err = run(capsys, "snapshot", "group", "create", "g1", "db", "web", "-c", uri,
                           "--timeout", "4")  # fmt: skip
    assert code == 4 and "timed out after 4s" in err, err
    assert FREEZE in slow.commands  # the deadline passed while web's freeze was pending
    for fake in fakes.values():  # every freeze sent was thawed, confirmed
        assert fake.state == "thawed"
        assert FREEZE not in fake.commands or fake.commands[-2:] == [THAW, STATUS]

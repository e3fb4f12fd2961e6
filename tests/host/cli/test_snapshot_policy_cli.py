"""``snapshot create --consistency``, ``--mountpoint`` checks and ``fsfreeze check`` at the
command line, against libvirt's test driver and the freezable fake agent (as in
test_freeze_cli.py).  The test driver refuses disk-only snapshots (exit 8): that
refusal shows libvirt was asked, and its absence that it was not.
"""

from __future__ import annotations

import json

from test_freeze import FREEZE, FreezableFake
from test_freeze_cli import registered, run, served  # noqa: F401  (registered: autouse)

from gagent.host.consistency import load_records

FSINFO = [
    {"name": "vda", "mountpoint": "/data", "type": "ext4", "disk": []},
    {"name": "vda", "mountpoint": "/srv", "type": "ext4", "disk": []},
]
LIBVIRT_REFUSED = "unsupported flags"


def test_require_is_the_default_and_takes_no_snapshot_when_the_freeze_is_blocked(capsys, tmp_path):
    fake = FreezableFake(disabled={FREEZE})
    with served(fake, tmp_path) as uri:
        code, out, err = run(capsys, "snapshot", "create", "vm1", "s1", "-c", uri)
    assert code == 5 and out == ""  # the freeze is unavailable: libvirt was never asked
    assert "guest-fsfreeze-freeze" in err and LIBVIRT_REFUSED not in err
    assert FREEZE not in fake.commands


def test_prefer_falls_back_to_crash_consistent_and_says_so(capsys, tmp_path):
    fake = FreezableFake(disabled={FREEZE})
    with served(fake, tmp_path) as uri:
        code, _, err = run(
            capsys, "snapshot", "create", "vm1", "s1", "-c", uri, "--consistency", "prefer"
        )
    first, second = err.splitlines()
    assert first.startswith("gagent: warning: could not freeze vm1 (")
    assert first.endswith("taking a CRASH-CONSISTENT snapshot instead (--consistency prefer)")
    assert code == 8 and LIBVIRT_REFUSED in second  # the crash-consistent snapshot was asked


def test_crash_asks_no_agent(capsys, tmp_path):
    fake = FreezableFake()
    with served(fake, tmp_path) as uri:
        code, _, err = run(
            capsys, "snapshot", "create", "vm1", "s1", "-c", uri, "--consistency", "crash"
        )
        assert code == 8 and LIBVIRT_REFUSED in err and fake.commands == []
        code, _, err = run(
            capsys, "snapshot", "create", "vm1", "s1", "-c", uri, "--consistency", "crash",
            "--mountpoint", "/data",
        )  # fmt: skip
    assert code == 2 and "takes no freeze" in err


def test_a_mountpoint_the_guest_lacks_is_named_before_anything_freezes(capsys, tmp_path):
    fake = FreezableFake(extra={"guest-get-fsinfo": FSINFO})
    with served(fake, tmp_path) as uri:
        for argv in (
            ("snapshot", "create", "vm1", "s1"),
            ("fsfreeze", "freeze", "vm1"),
        ):
            code, out, err = run(capsys, *argv, "-c", uri, "--mountpoint", "/data",
                                 "--mountpoint", "/nope")  # fmt: skip
            assert code == 2 and out == "", argv
            assert err == (
                "gagent: error: vm1 has no filesystem mounted on /nope (guest-get-fsinfo lists: "
                "/data, /srv); nothing was frozen\n"
            )
    assert FREEZE not in fake.commands and "guest-fsfreeze-freeze-list" not in fake.commands


def test_fsfreeze_check(capsys, tmp_path):
    fake = FreezableFake(extra={"guest-get-fsinfo": FSINFO})
    with served(fake, tmp_path) as uri:
        code, out, err = run(capsys, "fsfreeze", "check", "vm1", "-c", uri)
        assert (code, err) == (0, "")
        assert out.endswith("vm1: a freeze is expected to work\n")
        assert "freezable: /data (ext4 on vda), /srv (ext4 on vda)" in out
        assert "vda is mounted 2 times" in out
        fake.disabled = frozenset({FREEZE})
        code, out, _ = run(capsys, "fsfreeze", "check", "vm1", "-c", uri, "--json")
    assert code == 10  # EXIT_CODES: a check failed
    report = json.loads(out)
    assert report["ok"] is False and report["qga_version"] == "7.2.0-fake"
    [blocked] = [f for f in report["findings"] if f["code"] == "command-disabled"]
    assert blocked["severity"] == "error" and "--block-rpcs" in blocked["fix"]
    assert FREEZE not in fake.commands  # a preflight never freezes


def test_fsfreeze_check_of_an_unreachable_agent(capsys, tmp_path):
    with served(FreezableFake(), tmp_path) as uri:
        pass  # the socket is gone now
    code, out, _ = run(capsys, "fsfreeze", "check", "vm1", "-c", uri, "--timeout", "20")
    assert code == 10
    assert out.splitlines()[0].startswith("error   unreachable: ")
    assert out.endswith("vm1: a freeze is NOT expected to work\n")


def test_list_shows_records_of_snapshots_libvirt_does_not_keep(capsys, tmp_path, monkeypatch):
    import test_freeze_cli

    from gagent.host.consistency import ConsistencyRecord, DiskConsistency, write_record

    monkeypatch.setenv("GAGENT_STATE_DIR", str(tmp_path / "state"))
    uuid = "0f5d3a62-1b7e-4c55-9a3e-7d2b8c9e4f10"  # the test driver makes one up per connection
    plain = test_freeze_cli.node_xml
    monkeypatch.setattr(
        test_freeze_cli, "node_xml",
        lambda *a, **k: plain(*a, **k).replace("</name>", f"</name><uuid>{uuid}</uuid>", 1),
    )  # fmt: skip
    record = ConsistencyRecord(
        "vm1", uuid, "nometa", "crash", "prefer", created=1.0e9, metadata=False,
        fallback="no agent", disks=[DiskConsistency("vda", "/o.qcow2", "/b", "crash")],
    )  # fmt: skip
    with served(FreezableFake(), tmp_path) as uri:
        write_record(record)
        code, out, err = run(capsys, "snapshot", "list", "vm1", "-c", uri)
        assert (code, err) == (0, "")
        header, row = out.splitlines()
        assert "consistency" in header
        assert row.split()[0] == "nometa" and "no-metadata" in row and "crash (fallback)" in row
        code, out, _ = run(capsys, "snapshot", "list", "vm1", "-c", uri, "--json")
        [entry] = json.loads(out)
        assert entry["record"]["fallback"] == "no agent"
        assert entry["disks"][0]["overlay"] == "/o.qcow2"
        assert load_records(uuid)["nometa"].policy == "prefer"
        # libvirt knows nothing of it: delete forgets the record alone
        code, out, err = run(capsys, "snapshot", "delete", "vm1", "nometa", "-c", uri)
        assert (code, err) == (0, "") and out.startswith("forgot gagent's record of snapshot")
        assert load_records(uuid) == {}
        write_record(record)  # again, deleted with --json (after the command or before it)
        for before, after in (([], ["--json"]), (["--json"], [])):
            code, out, err = run(capsys, *before, "snapshot", "delete", "vm1", "nometa",
                                 "-c", uri, *after)  # fmt: skip
            if not before:
                assert (code, err) == (0, "")
                deleted = json.loads(out)
                assert {k: deleted[k] for k in ("domain", "name", "metadata_only")} == {
                    "domain": "vm1", "name": "nometa", "metadata_only": False,
                }  # fmt: skip
                assert deleted["message"].startswith("forgot gagent's record of snapshot")
            else:  # nothing left to delete: the error is the command's, as without --json
                assert code == 8 and out == "" and "nometa" in err
    assert load_records(uuid) == {}


def test_fsfreeze_check_help_states_codes_of_the_table():
    import re

    from click.testing import CliRunner

    from gagent.host.cli import EXIT_CODES, cli

    out = CliRunner().invoke(cli, ["fsfreeze", "check", "--help"], terminal_width=200).output
    text = " ".join(out.split("Exit codes:")[1].split())
    codes = {int(c) for c in re.findall(r"(?:^|[;:,] )(\d+) ", text)}
    assert codes == {0, 4, 8, 10} and codes <= set(EXIT_CODES)

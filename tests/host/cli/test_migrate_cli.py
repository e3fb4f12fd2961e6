"""``gagent migrate-check`` and ``gagent migrate`` in-process, through ``main`` (exit codes as
users see them), on libvirt test-driver hosts (tests/host/migration/hosts/*.xml).

The test driver has no migrate3: the runs that must get as far as migrating use a fake
``run_migration`` that records what it was asked; one run keeps the real call and shows
the driver's refusal (exit 12).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

import gagent.host.migration as migration
from gagent.errors import UsageError
from gagent.host.cli import cli, main
from gagent.host.cli import migrate as migrate_cli
from gagent.host.migration import MigrationResult, flags_for

HOSTS = Path(__file__).parents[1] / "migration" / "hosts"
SOURCE = f"test://{HOSTS / 'source.xml'}"
DEST = f"test://{HOSTS / 'dest.xml'}"
# web -> dest.xml: free-memory FAILs (file-based test hosts report 0 bytes free);
# cpu (driver cannot compare), fsfreeze and guest-agent (driver cannot relay) WARN.
NO_FAIL = ("--skip", "free-memory")
ALL_PASS = ("--skip", "free-memory", "--skip", "cpu", "--skip", "fsfreeze", "--skip", "guest-agent")


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """What the lead's registration in host/cli/__init__.py will do."""
    monkeypatch.setitem(cli.commands, "migrate-check", migrate_cli.migrate_check)
    monkeypatch.setitem(cli.commands, "migrate", migrate_cli.migrate)
    monkeypatch.setattr(migrate_cli, "_interactive", lambda: False)


@pytest.fixture
def fake_migration(monkeypatch):
    calls = []

    async def run_migration(ctx, *, uri=None, on_progress=None, poll_interval=0.5):
        calls.append({"domain": ctx.facts.name, "options": ctx.options, "uri": uri})
        return MigrationResult(ctx.facts.name, ctx.destination.uri, 1.25, flags_for(ctx.options))

    monkeypatch.setattr(migration, "run_migration", run_migration)
    return calls


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check(capsys, domain: str, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "migrate-check", "-c", SOURCE, domain, DEST, "--no-plugins", *extra)


def test_a_fail_gives_exit_10_and_names_the_failed_checks(capsys):
    code, out, err = check(capsys, "web")
    assert code == 10
    lines = out.splitlines()
    assert lines[0] == f"Pre-migration checks of web: {SOURCE} -> {DEST}"
    assert any(line.split()[:2] == ["FAIL", "free-memory"] for line in lines)
    assert any(line.split()[:2] == ["WARNING", "cpu"] for line in lines)
    assert lines[-1] == "12 checks: 8 SUCCESS, 3 WARNING, 1 FAIL"
    assert err == "gagent: migration would be refused: failed checks: free-memory\n"


def test_json_prints_the_full_report(capsys):
    code, out, _ = check(capsys, "db", "--json")
    assert code == 10
    report = json.loads(out)
    assert report["verdict"] == "FAIL" and report["decision"] == "refused: a check failed"
    assert report["domain"] == "db" and report["destination"] == DEST
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["hostdev"] == "FAIL" and statuses["snapshots"] == "WARNING"
    (hostdev,) = [c for c in report["checks"] if c["name"] == "hostdev"]
    assert hostdev["details"] == {"hostdevs": ["pci 0000:03:00.0"]}
    assert hostdev["severity"] == "critical" and hostdev["origin"] == "builtin"


def test_warnings_give_exit_11_unless_allowed(capsys):
    code, _, err = check(capsys, "web", *NO_FAIL)
    assert code == 11
    assert err == (
        "gagent: migration would stop: warnings from cpu, fsfreeze, guest-agent "
        "(pass --allow-warnings to go on)\n"
    )
    assert check(capsys, "web", *NO_FAIL, "--allow-warnings")[0] == 0
    assert check(capsys, "web", *ALL_PASS)[0] == 0


def test_external_checks_dir(capsys, tmp_path):
    hook = tmp_path / "change-ticket.sh"
    hook.write_text('#!/bin/sh\necho \'{"message": "no change ticket open"}\'\nexit 2\n')
    hook.chmod(0o755)
    code, out, err = check(capsys, "web", *ALL_PASS, "--checks-dir", str(tmp_path))
    assert code == 10
    assert "  FAIL     change-ticket       no change ticket open" in out.splitlines()
    assert err.endswith("failed checks: change-ticket\n")


def test_unknown_skip_and_missing_domain_are_the_usual_errors(capsys):
    code, _, err = check(capsys, "web", "--skip", "nope")
    assert code == 2 and err.startswith("gagent: error: no check named nope (checks: cpu, ")
    code, _, err = check(capsys, "ghost")
    assert code == 8 and err.startswith("gagent: error: no domain 'ghost' on test://")


def migrate(capsys, domain: str, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "migrate", "-c", SOURCE, domain, DEST, "--no-plugins", *extra)


def test_migrate_refuses_on_a_fail_and_does_not_migrate(capsys, fake_migration):
    code, out, err = migrate(capsys, "db", "--live", "--allow-warnings")
    assert code == 10
    assert fake_migration == []
    assert err.startswith("gagent: not migrating: failed checks: cpu, free-memory, storage, ")
    assert "migrated" not in out


def test_migrate_refuses_warnings_in_a_non_interactive_run(capsys, fake_migration):
    code, _, err = migrate(capsys, "web", *NO_FAIL, "--live")
    assert code == 11
    assert fake_migration == []
    assert err.startswith("gagent: not migrating: warnings from cpu, fsfreeze, guest-agent")


def test_migrate_with_allowed_warnings_passes_the_options(capsys, fake_migration):
    code, out, _ = migrate(
        capsys, "web", *NO_FAIL, "--allow-warnings", "--live", "--persistent",
        "--undefine-source", "--migrate-uri", "tcp://10.0.0.2",
    )  # fmt: skip
    assert code == 0
    (call,) = fake_migration
    assert call["domain"] == "web" and call["uri"] == "tcp://10.0.0.2"
    options = call["options"]
    assert (options.live, options.persistent, options.undefine_source) == (True, True, True)
    assert not options.copy_storage
    assert out.splitlines()[-1] == f"migrated web to {DEST} in 1.2s"


def test_migrate_json(capsys, fake_migration):
    code, out, _ = migrate(capsys, "web", *ALL_PASS, "--copy-storage", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["verdict"] == "SUCCESS" and data["decision"] == "proceed"
    assert data["migration"]["domain"] == "web" and data["error"] is None
    assert fake_migration[0]["options"].copy_storage


def test_migrate_json_streams_progress_as_json_lines_on_stderr(capsys, monkeypatch):
    from gagent.host.virt import JobProgress

    async def run_migration(ctx, *, uri=None, on_progress=None, poll_interval=0.5):
        assert on_progress is not None  # not a terminal, but --json: progress is wanted
        on_progress(JobProgress("bounded", 500, 0, 1000, 100, 900))
        on_progress(JobProgress("bounded", 1000, 0, 1000, 1000, 0))
        return MigrationResult(ctx.facts.name, ctx.destination.uri, 1.0, flags_for(ctx.options))

    monkeypatch.setattr(migration, "run_migration", run_migration)
    code, out, err = migrate(capsys, "web", *ALL_PASS, "--json")
    assert code == 0, err
    assert json.loads(out)["migration"]["domain"] == "web"  # stdout: the one result
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert events[0] == {"event": "progress", "what": "migrating", "done": 100, "total": 1000,
                         "unit": "bytes", "seconds": 0.5}  # fmt: skip
    assert events[-1]["done"] == 1000  # the last state, even when rate-limited


@pytest.mark.parametrize(
    ("answer", "expected", "migrated"), [("n\n", 11, 0), ("y\n", 0, 1), ("\n", 11, 0)]
)
def test_on_a_terminal_the_user_is_asked_once(
    capsys, monkeypatch, fake_migration, answer, expected, migrated
):
    monkeypatch.setattr(migrate_cli, "_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    code, _, err = migrate(capsys, "web", *NO_FAIL, "--live")
    assert code == expected
    assert len(fake_migration) == migrated
    assert err.count("Migrate anyway? [y/N]") == 1
    assert "3 warning(s):\n  - cpu: cannot compare CPUs" in err


def test_a_migration_libvirt_refuses_gives_exit_12(capsys):
    code, out, err = migrate(capsys, "web", *NO_FAIL, "--allow-warnings", "--live")
    assert code == 12
    assert err.startswith(f"gagent: error: migration failed: migrating web to {DEST}: ")
    assert "virDomainMigrate3" in err
    assert "migrated" not in out


def test_the_commands_exist_under_the_names_to_register():
    assert migrate_cli.migrate_check.name == "migrate-check"
    assert migrate_cli.migrate.name == "migrate"
    with pytest.raises(UsageError):
        migration.collect_checks(plugins=False, skip=["no-such-check"])


def test_migration_progress_in_human_units():
    from gagent.host.virt import JobProgress

    shown = []
    show = migrate_cli._show_migration(lambda *args, **counts: shown.append((args, counts)))
    show(JobProgress("bounded", 2500, 0, 1 << 30, 256 << 20, 768 << 20))
    show(JobProgress("unbounded", 4000, 0, 0, 0, 0))
    assert shown == [
        ((256 << 20, 1 << 30, "2.5s"), {"seconds": 2.5}),
        ((0, None, "4.0s"), {"seconds": 4.0}),
    ]


@pytest.fixture
def silent_listener():
    """A TCP port that accepts connections and never says a word (a hung destination)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in [*accepted, server]:
            conn.close()


def test_a_destination_that_never_answers_is_bounded_by_timeout(capsys, silent_listener):
    started = time.monotonic()
    code, out, err = run(
        capsys, "migrate-check", "-c", SOURCE, "web", f"qemu+tcp://127.0.0.1:{silent_listener}/system",
        "--no-plugins", "--timeout", "1",
    )  # fmt: skip
    took = time.monotonic() - started
    assert (code, out) == (4, "")
    assert err == (
        "gagent: error: timed out after 1s waiting for the destination hypervisor "
        f"qemu+tcp://127.0.0.1:{silent_listener}/system: still waiting for libvirt (connecting "
        f"to qemu+tcp://127.0.0.1:{silent_listener}/system) (is libvirtd answering? raise "
        "--timeout if it is only slow)\n"
    )
    assert took < 1 + 10  # the deadline plus a busy machine's margin, not libvirt's own minutes

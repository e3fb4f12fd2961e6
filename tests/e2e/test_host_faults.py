"""The host-side promises under real faults, with the real CLI as a separate process.

* ``timeout(1)`` (SIGTERM) and a dropped session (SIGHUP) in the freeze window
  of a real guest, held open by a slow fsfreeze hook: the guest ends thawed;
* a hung libvirtd (the test daemon SIGSTOPped): ``--timeout`` holds for agent,
  status, fsfreeze and snapshot commands, and ``gagent thaw`` still thaws,
  through the channel socket of the domain's running QEMU process;
* a snapshot whose libvirt call hangs (libvirtd stopped once the freeze is on
  its way) and is then stopped by SIGTERM: the guest is thawed at once, and
  the command says libvirt may still finish a crash-consistent snapshot.

Every fault test asserts the exit code, that the command ended within its
deadline plus a margin (generous: the machine may be busy), the one-line
message, and that the guest ends thawed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from gagent.client import open_agent
from gagent.fs_types import FsfreezeStatus
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

GAGENT = str(Path(sys.executable).with_name("gagent"))
#: What a busy 2-CPU machine may add to a deadline (process start, imports, a thaw).
MARGIN = 15.0
HOOK = "/etc/gagent/fsfreeze-hook.d/40-e2e-slow"
HOOK_LOG = "/run/gagent-e2e-slow-hook.log"  # tmpfs: never frozen
#: Logs each call (so a test knows the freeze was under way), and holds the freeze request
#: open for a while: the window in which the tests send their signals.
SLOW_HOOK = f"""#!/bin/sh
echo "$1" >>{HOOK_LOG}
[ "$1" != freeze ] || sleep 8
"""
#: timeout(1)'s delay: well inside the hook's sleep, well after gagent sent the freeze.
SIGNAL_AFTER = 5


def gagent(*argv: str, timeout: float = 120) -> tuple[int, str, str, float]:
    started = time.monotonic()
    proc = subprocess.run([GAGENT, *argv], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


async def _sh(agent, script: str) -> None:
    result = await run_program(agent, ["/bin/sh", "-c", script])
    assert result.exit_code == 0, result


async def _status(socket_path: Path) -> FsfreezeStatus:
    with trio.fail_after(60):
        async with open_agent(socket_path) as agent:
            return await agent.fsfreeze_status()


@pytest.mark.parametrize("signame", ["TERM", "HUP"])
async def test_a_signal_in_the_freeze_window_leaves_the_guest_thawed(systemd_domain, signame):
    name, uri, sock = systemd_domain.name, systemd_domain.uri, systemd_domain.socket_path
    with trio.fail_after(60):
        async with open_agent(sock) as agent:
            await _sh(
                agent,
                f"rm -f {HOOK_LOG}; cat >{HOOK} <<'EOF'\n{SLOW_HOOK}EOF\nchmod 755 {HOOK}",
            )
    try:
        # timeout(1) signals while the freeze request is in flight (the hook sleeps)
        argv = ["timeout", "-s", signame, str(SIGNAL_AFTER), GAGENT, "fsfreeze", "freeze", name,
                "-c", uri]  # fmt: skip
        started = time.monotonic()
        proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        took = time.monotonic() - started
        err = proc.stderr.decode()
        assert proc.returncode == 124, err  # timeout(1)'s own code for "I had to signal it"
        assert err.strip().splitlines()[-1] == f"gagent: interrupted by SIG{signame}", err
        assert took < 8 + MARGIN, took  # the hook's sleep, then the shielded thaw
        assert await _status(sock) is FsfreezeStatus.THAWED
        with trio.fail_after(60):
            async with open_agent(sock) as agent:
                log = await run_program(agent, ["cat", HOOK_LOG])
        # the freeze was under way when the signal came, and the thaw followed it (on a busy
        # host a thaw attempt may time out behind the slow freeze and be sent again: the
        # thaw is split over attempts, and a second thaw is harmless)
        first, *after = log.stdout.decode().split()
        assert first == "freeze" and after and set(after) == {"thaw"}, log
    finally:
        with trio.fail_after(60):
            async with open_agent(sock) as agent:
                if await agent.fsfreeze_status() is FsfreezeStatus.FROZEN:
                    await agent.fsfreeze_thaw()
                await _sh(agent, f"rm -f {HOOK} {HOOK_LOG}")


@pytest.fixture
def stopped_libvirtd(libvirt_daemon):
    """The test libvirtd, SIGSTOPped for the test (and always continued afterwards)."""
    with libvirt_daemon.stopped():
        yield libvirt_daemon


@pytest.mark.parametrize(
    "command",
    [("agent", "{name}", "-c", "{uri}", "--timeout", "3", "ping"),
     ("status", "{name}", "-c", "{uri}", "--timeout", "3"),
     ("fsfreeze", "status", "{name}", "-c", "{uri}", "--timeout", "3"),
     ("snapshot", "create", "{name}", "never", "-c", "{uri}", "--timeout", "3"),
     ("channel", "list", "{name}", "-c", "{uri}", "--timeout", "3")],
    ids=["agent-ping", "status", "fsfreeze-status", "snapshot-create", "channel-list"],
)  # fmt: skip
async def test_a_hung_libvirtd_cannot_outlive_the_timeout(main_domain, stopped_libvirtd, command):
    argv = [w.format(name=main_domain.name, uri=main_domain.uri) for w in command]
    code, _out, err, took = await trio.to_thread.run_sync(lambda: gagent(*argv))
    assert code == 4, err
    assert err.startswith("gagent: error: timed out after 3s waiting for domain"), err
    # the line names the party that did not answer: libvirt, and the call it hung in
    assert ": still waiting for libvirt (" in err and "(is libvirtd answering?" in err, err
    assert len(err.splitlines()) == 1, err
    assert took < 3 + MARGIN, took


async def test_emergency_thaw_goes_around_a_hung_libvirtd(
    main_domain, libvirt_daemon, libvirt_conn
):
    sock = main_domain.socket_path
    # by UUID: other test runs on this machine may run a guest of the same name
    uuid = libvirt_conn.lookupByName(main_domain.name).UUIDString()
    with trio.fail_after(60):
        async with open_agent(sock) as agent:
            assert await agent.fsfreeze_freeze() >= 1
    try:
        with libvirt_daemon.stopped():
            code, out, err, took = await trio.to_thread.run_sync(
                lambda: gagent("thaw", uuid, "-c", main_domain.uri, "--timeout", "4")
            )
        assert code == 0, (out, err)
        assert "QEMU pid" in out and "libvirt did not answer within 2s" in out, out
        assert "thawed" in out and "confirmed" in out, out
        assert took < 4 + MARGIN, took
        assert await _status(sock) is FsfreezeStatus.THAWED
    finally:
        if await _status(sock) is FsfreezeStatus.FROZEN:
            async with open_agent(sock) as agent:
                await agent.fsfreeze_thaw()


MARKED_HOOK = f"""#!/bin/sh
echo "$1" >>{HOOK_LOG}
[ "$1" != freeze ] || sleep 3
"""


async def test_sigterm_while_libvirts_snapshot_call_hangs_thaws_at_once(
    systemd_domain, libvirt_daemon
):
    name, uri, sock = systemd_domain.name, systemd_domain.uri, systemd_domain.socket_path
    overlay = f"/tmp/gagent-e2e-hung-{os.getpid()}.qcow2"
    with trio.fail_after(60):
        async with open_agent(sock) as agent:
            await _sh(
                agent,
                f"rm -f {HOOK_LOG}; cat >{HOOK} <<'EOF'\n{MARKED_HOOK}EOF\nchmod 755 {HOOK}",
            )
    from gagent.host.session import open_domain_agent

    argv = [GAGENT, "snapshot", "create", name, "hung", "-c", uri, "--no-metadata",
            "--disk", f"vda={overlay}", "--timeout", "120"]  # fmt: skip
    proc = await trio.to_thread.run_sync(
        lambda: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    libvirtd_held = contextlib.ExitStack()
    try:
        # once the hook runs, gagent has read the domain and sent the freeze: from now on
        # libvirtd is only needed for the snapshot call itself, which will hang
        with trio.fail_after(60):
            async with open_domain_agent(name, uri=uri, transport="libvirt") as other:
                for _poll in range(600):
                    hook_log = await run_program(other, ["cat", HOOK_LOG])
                    if "freeze" in hook_log.stdout.decode():
                        break
                    await trio.sleep(0.1)
        libvirtd_held.enter_context(libvirt_daemon.stopped())
        await trio.sleep(3 + 2)  # the hook's sleep, then the freeze holds for libvirt's call
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=60))
        took = time.monotonic() - sent
        assert proc.returncode == 143, err
        assert took < MARGIN, took  # not the 60 s of --snapshot-timeout
        lines = err.strip().splitlines()
        assert lines[-1] == "gagent: interrupted by SIGTERM", err
        warning = next(line for line in lines if "libvirt may still finish" in line)
        assert "interrupted while libvirt was creating snapshot hung" in warning
        assert "thawed at once (confirmed)" in warning and "CRASH-CONSISTENT" in warning
        assert await _status(sock) is FsfreezeStatus.THAWED  # libvirtd still stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        libvirtd_held.close()
        with trio.fail_after(60):
            async with open_agent(sock) as agent:
                if await agent.fsfreeze_status() is FsfreezeStatus.FROZEN:
                    await agent.fsfreeze_thaw()
                await _sh(agent, f"rm -f {HOOK} {HOOK_LOG}")

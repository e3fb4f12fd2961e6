"""The freeze dead-man's switch in the real guests: the guest thaws itself, with no host action.

In the busybox/sysvinit guest (a fresh ``doomed_domain``: these tests kill its
agent) and in the systemd guest from the .deb, with the deadline set to
``DEADLINE`` seconds in ``/etc/gagent/deadman.conf``:

* ``gagent fsfreeze freeze`` SIGKILLed while its freeze is in flight (a slow
  freeze hook holds it), qemu-ga freezes anyway: a writer blocked by the freeze
  completes within the deadline + 2 s of the arm, with nothing sent from the
  host; ``gagent-guest check`` reports the firing and its freeze; qemu-ga still
  says "frozen" until ``gagent thaw`` (which thaws nothing and succeeds);
* the same with the guest's qemu-ga SIGKILLed while frozen (its state survives
  in /run: the restarted agent is still "frozen" until the host thaws);
* a normal snapshot (busybox) or freeze and thaw (systemd) arms the switch and
  the thaw disarms it: it never fires.

Everything inside the guest is watched through libvirt's agent
(org.qemu.guest_agent.0), which keeps serving guest-exec while ours is frozen
or dead.  Times are the guest's own (/proc/uptime and the switch's records),
not the host's: a busy host slows the guest's clock reading, not its verdict.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from gagent.client import open_agent
from gagent.commands import AgentCommands
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

GAGENT = str(Path(sys.executable).with_name("gagent"))
DEADLINE = 5
#: The promise: writable again within the deadline + 2 s.
SLACK = 2.0
#: Bounds that only catch a hang (a busy 2-CPU host runs TCG guests slowly).
BOUND = 120.0
#: /proc/uptime's resolution (the guest writer's clock; the switch records more digits).
UPTIME_RESOLUTION = 0.01
CONF = "/etc/gagent/deadman.conf"
SAVED_CONF = "/run/gagent-e2e-deadman.conf"
STATE = "/run/gagent/deadman"
SLOW_HOOK = "/etc/gagent/fsfreeze-hook.d/40-e2e-deadman"
HOOK_STARTED = "/run/gagent-e2e-deadman-hook"
PROBE = "gagent-e2e-deadman-probe"
PORT = "org.gagent.agent.0"
#: qemu-ga's "I froze" (its state directory: /run/gagent-qga/PORT or .../vportNpM).
QGA_FROZEN = "/run/gagent-qga/*/qga.state.isfrozen"
INIT_SCRIPT = "/etc/gagent/sysvinit/gagent-qga"


@pytest.fixture(params=["busybox", "systemd"])
def guest(request):
    """The busybox/sysvinit guest (a fresh one: these tests kill agents) or the systemd one."""
    fixture = "doomed_domain" if request.param == "busybox" else "systemd_domain"
    domain = request.getfixturevalue(fixture)
    domain.sysvinit = request.param == "busybox"  # no supervisor restarts its qemu-ga
    return domain


async def _sh(agent: AgentCommands, script: str) -> str:
    result = await run_program(agent, ["/bin/sh", "-c", script])
    assert result.succeeded, (result.exit_code, result.stdout.decode(), result.stderr.decode())
    return result.stdout.decode()


async def _record(agent: AgentCommands, name: str) -> list[dict]:
    text = await _sh(agent, f"cat {STATE}/{name} 2>/dev/null; true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def gagent(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run([GAGENT, *argv], capture_output=True, text=True, timeout=BOUND)
    return proc.returncode, proc.stdout, proc.stderr


@contextlib.asynccontextmanager
async def short_deadline(domain, *, slow_hook: bool = False):
    """libvirt's agent (the watcher: our channel's socket takes one client at a time, and
    the gagent commands under test need it); the deadline DEADLINE; a probe path on a
    filesystem the freeze covers.  Restores the guest whatever happens."""
    name, uri = domain.name, domain.uri
    async with open_domain_agent(name, uri=uri, transport="libvirt") as watcher:
        frozen_dir = (
            await _sh(watcher, "grep -q ' /data ' /proc/mounts && echo /data || echo /var/tmp")
        ).strip()
        probe = f"{frozen_dir}/{PROBE}"
        hook = f'[ "$1" != freeze ] || {{ touch {HOOK_STARTED}; sleep 3; }}'
        await _sh(
            watcher,
            f"cp {CONF} {SAVED_CONF} && echo GAGENT_FREEZE_DEADLINE={DEADLINE} >{CONF}"
            f" && rm -f {STATE}/fired {STATE}/last {HOOK_STARTED} {probe}"
            f" && mkdir -p /etc/gagent/fsfreeze-hook.d"
            + (f" && printf '#!/bin/sh\\n%s\\n' '{hook}' >{SLOW_HOOK} && chmod 755 {SLOW_HOOK}"
               if slow_hook else ""),
        )  # fmt: skip
        try:
            yield watcher, probe
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(BOUND):
                # through every agent there is: a test may have failed anywhere
                await trio.to_thread.run_sync(lambda: gagent("thaw", name, "-c", uri))
                await _sh(
                    watcher,
                    f"mv {SAVED_CONF} {CONF}; rm -f {SLOW_HOOK} {HOOK_STARTED} {probe}"
                    f" {STATE}/fired {STATE}/last",
                )


@contextlib.asynccontextmanager
async def blocked_writer(watcher: AgentCommands, probe: str):
    """A guest writer of ``probe`` that starts as soon as our qemu-ga has frozen (its
    state file says so) and blocks on the freeze; yields a dict that gets its
    (start, end) in guest uptime once the write went through.  Started before the
    freeze, so it is under way well before any deadline however slow the guest."""
    times: dict[str, tuple[float, float]] = {}

    async def write() -> None:
        out = await _sh(
            watcher,
            f"until ls {QGA_FROZEN} >/dev/null 2>&1; do sleep 0.05; done; "
            f"read -r a _ </proc/uptime; echo written >{probe}; "
            'read -r b _ </proc/uptime; echo "$a $b"',
        )
        start, end = map(float, out.split())
        times["writer"] = (start, end)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        yield times


async def _until_hook_runs(watcher: AgentCommands) -> None:
    """qemu-ga runs the slow freeze hook: it got the freeze request and will freeze."""
    while True:
        if "yes" in await _sh(watcher, f"[ -e {HOOK_STARTED} ] && echo yes; true"):
            return
        await trio.sleep(0.1)


async def _guest_check(watcher: AgentCommands) -> dict:
    result = await run_program(watcher, ["python3", "-m", "gagent.guest", "check", "--json"])
    return json.loads(result.stdout)


async def _the_switch_thawed_the_guest(watcher, probe: str, writer: tuple[float, float]) -> dict:
    """The writer blocked until the switch fired, on time; one firing was recorded."""
    [fired] = await _record(watcher, "fired")
    start, end = writer
    armed, fired_at = fired["armed_uptime"], fired["fired_uptime"]
    assert DEADLINE <= fired_at - armed <= DEADLINE + SLACK, fired
    # written while frozen, done after the thaw; the writer reads /proc/uptime, which
    # shows the same clock in whole hundredths (truncated), the switch its full value
    assert start - UPTIME_RESOLUTION < fired_at <= end + UPTIME_RESOLUTION, (writer, fired)
    assert end - armed <= DEADLINE + SLACK, (writer, fired)  # writable again in time
    assert fired["errors"] == [] and fired["thawed"], fired
    assert (await _sh(watcher, f"cat {probe}")).strip() == "written"
    report = await _guest_check(watcher)
    findings = [f for f in report["findings"] if f["code"] == "deadman-fired"]
    assert len(findings) == 1 and fired["freeze"] in findings[0]["message"], report
    assert "gagent thaw" in findings[0]["hint"], findings
    return fired


async def _host_thaw_resets_qemu_ga(domain) -> None:
    """qemu-ga still says frozen (only its own thaw resets that); the host's thaw does."""
    sock, name, uri = str(domain.socket_path), domain.name, domain.uri
    code, out, err = await trio.to_thread.run_sync(
        lambda: gagent("agent", "--socket", sock, "fsfreeze", "status")
    )
    assert "frozen" in out and "thawed" not in out, (code, out, err)
    code, out, err = await trio.to_thread.run_sync(lambda: gagent("thaw", name, "-c", uri))
    assert code == 0, (out, err)
    code, out, err = await trio.to_thread.run_sync(
        lambda: gagent("agent", "--socket", sock, "fsfreeze", "status")
    )
    assert code == 0 and "thawed" in out, (code, out, err)


async def _firing_settled(watcher: AgentCommands) -> None:
    """After the host's thaw, check still tells of the firing, as information only."""
    report = await _guest_check(watcher)
    [finding] = [f for f in report["findings"] if f["code"] == "deadman-fired"]
    assert finding["severity"] == "info" and "qemu-ga was thawed at" in finding["message"]


async def test_gagent_killed_in_the_freeze_window(guest):
    with trio.fail_after(BOUND * 3):
        async with short_deadline(guest, slow_hook=True) as (watcher, probe):
            argv = [GAGENT, "fsfreeze", "freeze", guest.name, "-c", guest.uri]
            async with blocked_writer(watcher, probe) as writer:
                holder = await trio.lowlevel.open_process(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                try:
                    await _until_hook_runs(watcher)  # the freeze request is in flight
                    holder.send_signal(signal.SIGKILL)  # (its PID, not a name)
                finally:
                    holder.kill()
                    await holder.wait()
                assert holder.returncode == -signal.SIGKILL
            # qemu-ga froze for a dead client; the writer got through: no host action
            await _the_switch_thawed_the_guest(watcher, probe, writer["writer"])
            await _host_thaw_resets_qemu_ga(guest)
            await _firing_settled(watcher)


async def test_qemu_ga_killed_while_frozen(guest):
    with trio.fail_after(BOUND * 3):
        async with short_deadline(guest) as (watcher, probe):
            async with open_agent(guest.socket_path) as agent:  # guest-exec's parent: our qemu-ga
                qga_pid = int(await _sh(agent, "echo $PPID"))
            async with blocked_writer(watcher, probe) as writer:
                code, out, err = await trio.to_thread.run_sync(
                    lambda: gagent("fsfreeze", "freeze", guest.name, "-c", guest.uri)
                )
                assert code == 0, (out, err)
                await _sh(watcher, f"kill -KILL {qga_pid}")
            await _the_switch_thawed_the_guest(watcher, probe, writer["writer"])
            if guest.sysvinit:  # nobody restarts it: do as the init script would at boot
                out = await _sh(watcher, f"GAGENT_PORTS={PORT} {INIT_SCRIPT} start")
                assert "started on a frozen state" in out, out  # no pidfile until thawed
            answering = False
            while not answering:  # (systemd restarts it by itself: Restart=always)
                with contextlib.suppress(OSError), trio.move_on_after(5):
                    async with open_agent(guest.socket_path) as fresh:
                        await fresh.ping()
                        answering = True
                await trio.sleep(0.5)
            await _host_thaw_resets_qemu_ga(guest)
            await _firing_settled(watcher)
            if guest.sysvinit:  # thawed, qemu-ga wrote its pidfile: the init script sees it
                out = await _sh(watcher, f"GAGENT_PORTS={PORT} {INIT_SCRIPT} status")
                assert "running" in out, out


async def test_a_normal_freeze_never_fires_the_switch(guest):
    with trio.fail_after(BOUND * 3):
        async with short_deadline(guest) as (watcher, _probe):
            if guest.sysvinit:  # a doomed domain: its disks are ours to change
                argv = ["snapshot", "create", guest.name, "deadman", "-c", guest.uri]
            else:
                argv = ["fsfreeze", "freeze", guest.name, "-c", guest.uri]
            code, out, err = await trio.to_thread.run_sync(lambda: gagent(*argv))
            assert code == 0, (out, err)
            if argv[0] == "fsfreeze":
                code, out, err = await trio.to_thread.run_sync(
                    lambda: gagent("fsfreeze", "thaw", guest.name, "-c", guest.uri)
                )
                assert code == 0, (out, err)
            [last] = await _record(watcher, "last")  # armed, then disarmed by the thaw hook
            assert last["disarmed_uptime"] - last["armed_uptime"] < DEADLINE, last
            assert await _record(watcher, "armed") == []
            await trio.sleep(DEADLINE + SLACK)  # past the deadline: still nothing fired
            assert await _record(watcher, "fired") == []
            report = await _guest_check(watcher)
            assert "deadman-fired" not in [f["code"] for f in report["findings"]], report

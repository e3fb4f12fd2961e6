"""The guest package in a stock systemd guest: qemu-ga on gagent's port with no manual step.

The guest is Debian (debootstrap minbase + systemd, udev, kmod,
qemu-guest-agent, python3, python3-serial) with the .deb that
scripts/build-packages.sh builds installed by ``dpkg -i`` at image build time,
and nothing else configured (tests/harness/image/systemd_image.py).  The
domain gets the two channels gagent's add_to_domain adds: our socket channel
org.gagent.agent.0, which only the package's udev rule and template unit can
serve, and libvirt's org.qemu.guest_agent.0, which the distribution's own
qemu-guest-agent.service serves.  The tests watch our unit from the second
agent, so what they observe does not depend on the channel under test.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import trio

from gagent.client import open_agent
from gagent.commands import AgentCommands
from gagent.errors import AgentError
from gagent.freeze import frozen
from gagent.fs_types import FsfreezeStatus
from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.session import open_domain_agent
from gagent.programs import run_program
from gagent.transfer import copy_to_guest

pytestmark = pytest.mark.e2e

HOSTNAME = "e2e-systemd-guest"  # conftest.SYSTEMD_HOSTNAME
GAGENT = Path(sys.executable).with_name("gagent")
#: hot-plug: the agent answered 0.11-0.24 s after device_add, and stopped
#: < 0.3 s after device_del, when measured; these bounds only catch a hang.
PLUG_BOUND = 30.0


async def _sh(agent: AgentCommands, script: str) -> str:
    result = await run_program(agent, ["/bin/sh", "-c", script])
    assert result.succeeded, result
    return result.stdout.decode()


async def _port_of(agent: AgentCommands, name: str) -> str | None:
    """Kernel name (vportNpM) of the virtio port called ``name``, if it is there."""
    listing = await _sh(
        agent, 'for p in /sys/class/virtio-ports/*; do echo "${p##*/} $(cat "$p/name")"; done'
    )
    for line in listing.splitlines():
        kernel_name, _, port_name = line.partition(" ")
        if port_name == name:
            return kernel_name
    return None


async def _unit(agent: AgentCommands, unit: str) -> dict[str, str]:
    out = await _sh(agent, f"systemctl show -p ActiveState,MainPID,ExecStart {unit}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def _check(agent: AgentCommands, *args: str) -> tuple[int | None, dict]:
    result = await run_program(agent, ["/usr/bin/gagent-guest", "check", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


async def test_package_alone_starts_qemu_ga_on_our_port(systemd_domain):
    name, uri = systemd_domain.name, systemd_domain.uri
    with trio.fail_after(120):
        async with open_agent(systemd_domain.socket_path) as agent:
            assert await agent.host_name() == HOSTNAME
            status = await _sh(agent, "dpkg-query -W -f='${Status} ${Version}' gagent-guest")
            assert status.startswith("install ok installed "), status
            port = await _port_of(agent, GAGENT_CHANNEL)
            assert port is not None and port.startswith("vport")
            ours = await _unit(agent, f"gagent-qga@{port}.service")
            assert ours["ActiveState"] == "active", ours
            assert f"-p /dev/{port}" in ours["ExecStart"], ours
            # udev activates the unit: nobody enabled it
            enabled = await run_program(agent, ["systemctl", "is-enabled", "gagent-qga@.service"])
            assert enabled.stdout.decode().strip() in ("static", "indirect"), enabled
            stock = await _unit(agent, "qemu-guest-agent.service")
            assert stock["ActiveState"] == "active", stock
            assert stock["MainPID"] != ours["MainPID"]
        # the distribution's agent, on libvirt's channel, answers next to ours
        async with open_domain_agent(name, uri=uri, transport="libvirt") as stock_agent:
            assert await stock_agent.host_name() == HOSTNAME


async def test_gagent_guest_check_is_healthy_in_the_systemd_guest(systemd_domain):
    with trio.fail_after(120):
        async with open_agent(systemd_domain.socket_path) as agent:
            code, report = await _check(agent)
            assert code == 0 and report["healthy"], report
            assert report["target"] == GAGENT_CHANNEL
            codes = {f["code"] for f in report["findings"]}
            assert {"driver", "port", "served"} <= codes, report
            assert "no-activation" not in codes, report

            code, report = await _check(agent, "--port", LIBVIRT_AGENT_CHANNEL)
            assert code == 0 and report["healthy"], report


async def _until(predicate, bound: float) -> float:
    """Seconds until ``await predicate()`` is true (fails the test after ``bound``)."""
    t0 = time.monotonic()
    with trio.fail_after(bound):
        while True:
            if await predicate():
                break
            await trio.sleep(0.1)
    return time.monotonic() - t0


async def _gagent(*argv: str) -> tuple[int, str]:
    """Run the installed ``gagent`` command, as an operator would: (exit code, stdout+stderr)."""
    proc = await trio.run_process(
        [str(GAGENT), *argv], capture_stdout=True, capture_stderr=True, check=False
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


async def test_channel_remove_stops_and_channel_add_starts_our_agent(systemd_domain, e2e_record):
    """``gagent channel remove`` / ``add`` on the running guest: udev and systemd alone
    stop and start qemu-ga on the port (watched through the distribution's agent)."""
    name, uri, path = systemd_domain.name, systemd_domain.uri, systemd_domain.socket_path
    async with open_domain_agent(name, uri=uri, transport="libvirt") as watcher:
        port = await _port_of(watcher, GAGENT_CHANNEL)
        unit = f"gagent-qga@{port}.service"
        before = await _unit(watcher, unit)
        assert before["ActiveState"] == "active", before

        with trio.fail_after(PLUG_BOUND):
            code, out = await _gagent("channel", "remove", name, "-c", uri)
        assert code == 0 and GAGENT_CHANNEL in out, out
        assert GAGENT_CHANNEL not in systemd_domain.channel_states()
        try:

            async def stopped() -> bool:
                return (await _unit(watcher, unit))["ActiveState"] in ("inactive", "failed")

            stop_s = await _until(stopped, PLUG_BOUND)
            gone = await run_program(watcher, ["test", "-d", f"/proc/{before['MainPID']}"])
            assert gone.exit_code == 1, f"qemu-ga {before['MainPID']} outlived its port"
            code, report = await _check(watcher)
            findings = {f["code"]: f for f in report["findings"]}
            assert code != 0 and "port-missing" in findings, report
            assert "gagent channel add" in findings["port-missing"]["hint"], report
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(PLUG_BOUND):
                code, out = await _gagent("channel", "add", name, "-c", uri, "--path", str(path))
        assert code == 0 and GAGENT_CHANNEL in out, out

        async def answering() -> bool:
            code, out = await _gagent("agent", name, "-c", uri, "--timeout", "2", "hostname")
            return code == 0 and HOSTNAME in out

        start_s = await _until(answering, PLUG_BOUND)
        new_port = await _port_of(watcher, GAGENT_CHANNEL)
        after = await _unit(watcher, f"gagent-qga@{new_port}.service")
        assert after["ActiveState"] == "active", after
        code, out = await _gagent("status", name, "-c", uri)
        assert code == 0 and "agent answering" in out, out
    e2e_record("systemd_unplug_to_agent_stopped_s", stop_s)
    e2e_record("systemd_hotplug_to_gagent_cli_answering_s", start_s)
    print(f"e2e: systemd guest: agent stopped {stop_s:.2f} s after 'channel remove', "
          f"'gagent agent' answered {start_s:.2f} s after 'channel add'")  # fmt: skip


HOOK = "/etc/gagent/fsfreeze-hook.d/50-e2e"
HOOK_LOG = "/run/gagent-e2e-hook.log"  # tmpfs: never frozen
HOOK_FAIL = "/run/gagent-e2e-hook.fail"
HOOK_SCRIPT = f"""#!/bin/sh
echo "$1" >>{HOOK_LOG}
[ "$1" != freeze ] || [ ! -e {HOOK_FAIL} ]
"""


async def _hook_log(agent: AgentCommands) -> list[str]:
    return (await _sh(agent, f"cat {HOOK_LOG} 2>/dev/null; true")).split()


async def _install_hook(agent: AgentCommands, *, failing: bool) -> None:
    await _sh(
        agent,
        f"rm -f {HOOK_LOG} {HOOK_FAIL}; cat >{HOOK} <<'EOF'\n{HOOK_SCRIPT}EOF\nchmod 755 {HOOK}"
        + (f"; touch {HOOK_FAIL}" if failing else ""),
    )


async def test_package_fsfreeze_hook_runs_around_a_freeze(systemd_domain):
    name, uri = systemd_domain.name, systemd_domain.uri
    with trio.fail_after(120):
        async with (
            open_agent(systemd_domain.socket_path) as agent,
            open_domain_agent(name, uri=uri, transport="libvirt") as other,
        ):
            await _install_hook(agent, failing=False)
            try:
                async with frozen(agent, domain=name) as record:
                    assert record.frozen >= 1  # the root file system, at least
                    assert await agent.fsfreeze_status() is FsfreezeStatus.FROZEN
                    # our agent refuses guest-exec while frozen: look through the other one
                    assert await _hook_log(other) == ["freeze"]
                assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
                assert await _hook_log(agent) == ["freeze", "thaw"]
            finally:
                await _sh(agent, f"rm -f {HOOK} {HOOK_LOG} {HOOK_FAIL}")


async def test_failing_fsfreeze_hook_refuses_the_freeze(systemd_domain):
    with trio.fail_after(120):
        async with open_agent(systemd_domain.socket_path) as agent:
            await _install_hook(agent, failing=True)
            try:
                with pytest.raises(AgentError) as caught:
                    async with frozen(agent, domain=systemd_domain.name):
                        pytest.fail("the freeze went through a failing hook")
                assert "hook" in str(caught.value).lower(), caught.value
                assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
                assert (await _hook_log(agent))[:1] == ["freeze"]
            finally:
                await _sh(agent, f"rm -f {HOOK} {HOOK_LOG} {HOOK_FAIL}")


async def test_live_purge_and_install_stop_and_start_our_agent(systemd_domain, guest_deb):
    """The maintainer scripts on a running system: purging the package stops our agent
    (prerm), installing it again starts it on the port that is already there (postinst:
    udev reload + trigger), with no reboot and no manual step, and neither hangs."""
    name, uri, path = systemd_domain.name, systemd_domain.uri, systemd_domain.socket_path
    inside = f"/tmp/{guest_deb.name}"
    async with open_domain_agent(name, uri=uri, transport="libvirt") as watcher:
        await copy_to_guest(watcher, guest_deb, inside)
        port = await _port_of(watcher, GAGENT_CHANNEL)
        unit = f"gagent-qga@{port}.service"
        assert (await _unit(watcher, unit))["ActiveState"] == "active"

        with trio.fail_after(120):
            purged = await run_program(watcher, ["dpkg", "--purge", "gagent-guest"])
        assert purged.succeeded, purged
        assert (await _unit(watcher, unit))["ActiveState"] in ("inactive", "failed")
        await systemd_domain.wait_channel_state(GAGENT_CHANNEL, "disconnected")
        rules = await run_program(watcher, ["test", "-e", "/lib/udev/rules.d/61-gagent-qga.rules"])
        assert rules.exit_code == 1, "the purge left the udev rule behind"

        with trio.fail_after(120):
            installed = await run_program(watcher, ["dpkg", "-i", inside])
        assert installed.succeeded, installed

        async def answering() -> bool:
            try:
                with trio.move_on_after(2):
                    async with open_agent(path) as agent:
                        return await agent.host_name() == HOSTNAME
            except OSError:
                pass
            return False

        start_s = await _until(answering, PLUG_BOUND)
        assert (await _unit(watcher, unit))["ActiveState"] == "active"
        await run_program(watcher, ["rm", "-f", inside])
    print(f"e2e: systemd guest: agent answered {start_s:.2f} s after dpkg -i returned")

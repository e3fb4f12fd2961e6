"""Is a booted e2e guest still serving its agents?  And putting it right if not.

The shared guest lives for the whole session, so a test that leaves one of
its agents down (a restart still under way, a SIGSTOPped qemu-ga, libvirt
refusing the agent after an error) would fail every later test on that route,
far from the cause.  conftest.py checks after each test on the shared guest:
a test that left it not serving fails at teardown with what was found and the
guest's console, and the guest is repaired for the tests that follow.

Checked with the harness's own blocking client and plain libvirt-python, not
with gagent (the code under test), and every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Protocol

import libvirt
import libvirt_qemu
from e2e_guest import INIT_SCRIPT
from harness.image.boot import AgentConnection, AgentTimeout

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL

#: Seconds a guest may take to serve again after a test, e.g. to finish a
#: restart of its agents: 4-5x the slowest restart measured on a loaded 2-CPU
#: host (13 s, including the init script's SIGKILL escalation).
SERVING_BOUND = 60.0
#: Seconds for one probe of one route.
PROBE_BOUND = 5
#: The problem key for the whole domain (then only a reboot helps).
DOMAIN = "domain"


class Guest(Protocol):  # conftest.E2EDomain, without importing conftest
    name: str
    dom: libvirt.virDomain
    sockets: dict[str, object]
    served: tuple[str, ...]

    def channel_states(self) -> dict[str, str | None]: ...


def problems(guest: Guest) -> dict[str, str]:
    """What keeps the guest's served agents from answering on their routes, now:
    port name (or DOMAIN) -> what was found."""
    try:
        if not guest.dom.isActive():
            return {DOMAIN: f"domain {guest.name} is not running"}
        states = guest.channel_states()
    except libvirt.libvirtError as exc:
        return {DOMAIN: f"libvirt: {exc}"}
    found = {
        channel: f"{channel} is {states.get(channel)!r} in libvirt's live XML"
        for channel in guest.served
        if states.get(channel) != "connected"
    }
    if GAGENT_CHANNEL in guest.served and GAGENT_CHANNEL in guest.sockets:
        path = guest.sockets[GAGENT_CHANNEL]
        try:
            with AgentConnection(path, timeout=PROBE_BOUND) as agent:
                agent.sync(timeout=PROBE_BOUND, attempt=1.0)
        except (AgentTimeout, OSError) as exc:
            found.setdefault(GAGENT_CHANNEL, f"our socket {path}: {exc}")
    if LIBVIRT_AGENT_CHANNEL in guest.served:
        try:
            libvirt_qemu.qemuAgentCommand(guest.dom, '{"execute":"guest-ping"}', PROBE_BOUND, 0)
        except libvirt.libvirtError as exc:
            found.setdefault(LIBVIRT_AGENT_CHANNEL, f"libvirt's agent: {exc}")
    return found


def wait_serving(guest: Guest, bound: float = SERVING_BOUND) -> dict[str, str]:
    """Poll until the guest serves (returns {}) or ``bound`` passed (returns the problems)."""
    deadline = time.monotonic() + bound
    while True:
        found = problems(guest)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _restart_script(ports: list[str]) -> str:
    """Wake any SIGSTOPped agent, then restart those of ``ports`` (a restart also
    gives libvirt a fresh agent after it refused one on an error)."""
    return (
        'for f in /run/gagent-qga/*.pid; do read -r p <"$f" && kill -CONT "$p"; done; '
        f"GAGENT_PORTS={','.join(ports)} {INIT_SCRIPT} restart"
    )


def _run_through_socket(guest: Guest, script: str) -> str:
    with AgentConnection(guest.sockets[GAGENT_CHANNEL], timeout=PROBE_BOUND) as agent:
        agent.sync(timeout=PROBE_BOUND, attempt=1.0)
        status = agent.exec_wait("/bin/sh", ["-c", script], timeout=SERVING_BOUND)
    return f"exit {status.get('exitcode')}: {status.get('out-data', '').strip()!r}"


def _run_through_libvirt(guest: Guest, script: str) -> str:
    def call(command: str, arguments: dict) -> dict:
        request = json.dumps({"execute": command, "arguments": arguments})
        reply = libvirt_qemu.qemuAgentCommand(guest.dom, request, PROBE_BOUND, 0)
        return json.loads(reply)["return"]

    args = {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
    pid = call("guest-exec", args)["pid"]
    deadline = time.monotonic() + SERVING_BOUND
    while not (status := call("guest-exec-status", {"pid": pid})).get("exited"):
        if time.monotonic() > deadline:
            return f"still running after {SERVING_BOUND:.0f} s"
        time.sleep(0.2)
    out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
    return f"exit {status.get('exitcode')}: {out.strip()!r}"


def repair(guest: Guest, found: dict[str, str], reboot: Callable[[], object]) -> str:
    """Bring the agents back: restart the failing ones through an agent that still
    answers (and wait for that restart to end), else reboot the domain (``reboot``
    starts the destroyed domain and waits for it).  Says what was done and whether
    the guest serves again."""
    broken = [port for port in guest.served if port in found]
    working = [port for port in guest.served if port not in found]
    actions = []
    if DOMAIN not in found and broken and working:
        script = _restart_script(broken)
        route, run = (
            ("our socket", _run_through_socket)
            if GAGENT_CHANNEL in working
            else ("libvirt", _run_through_libvirt)
        )
        try:
            actions.append(f"restarted {broken} through {route} ({run(guest, script)})")
        except (AgentTimeout, OSError, libvirt.libvirtError, KeyError, ValueError) as exc:
            actions.append(f"restarting {broken} through {route} failed ({exc})")
        else:
            left = wait_serving(guest)
            if not left:
                return f"{actions[0]}; serving again"
            actions.append(f"still not serving: {left}")
    actions.append("rebooted the domain")
    try:
        if guest.dom.isActive():
            guest.dom.destroy()
        reboot()
    except Exception as exc:  # reported: the session goes on
        return f"{'; '.join(actions)}, which failed: {exc}"
    left = wait_serving(guest)
    return "; ".join(actions) + "; " + (f"still not serving: {left}" if left else "serving again")

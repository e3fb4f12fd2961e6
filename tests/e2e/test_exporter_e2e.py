"""``gagent exporter`` watching the e2e guests, scraped by a real Prometheus server.

The exporter runs as the command an operator starts (``gagent exporter -c
NAME=URI``) against the private libvirtd; a Prometheus server from the Debian
package (its own config and data directory under the test's workdir, a free
port, stopped by PID) scrapes it every second; the tests ask Prometheus's HTTP
API.  What they prove on the shared guest:

* ``gagent_guest_filesystem_used_bytes`` of /data is what ``df`` in the guest says;
* ``gagent_agent_up`` falls to 0 within one agent interval once the qemu-ga on
  gagent's channel is stopped (liveness from libvirt's channel state, not from
  a ping), and comes back to 1 when it is started again;
* ``gagent_guest_frozen`` is 1 while the guest is frozen;
* while the guest is paused, every scrape is served from the cache: none waits
  for the guest (which could not answer), and its series go stale.

The guest is left serving (the shared-guest check after each test holds us to
it): the stopped agent is started again, the freeze thawed, the pause resumed,
each in a ``finally`` with its own deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from e2e_guest import gagent_qga

from gagent.fs_types import FsfreezeStatus
from gagent.guest.deadman import parse_config
from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

HYPERVISOR = "e2e"
#: The agent groups' interval: "within one interval" is this.  Liveness comes from the
#: listing (every LISTING seconds) long before: the margin absorbs a busy machine.
INTERVAL = 10.0
LISTING = 1.0
AGENT_TIMEOUT = 3.0
SCRAPE = 1.0
#: Bound on anything that waits for Prometheus or a guest to catch up.
BOUND = 60.0
GAGENT = Path(sys.executable).with_name("gagent")
DEADMAN_CONF = Path(__file__).resolve().parents[2] / "packaging/fsfreeze/deadman.conf"


@dataclass
class Stack:
    exporter_url: str
    prometheus_url: str
    exporter: subprocess.Popen
    prometheus: subprocess.Popen
    workdir: Path

    def query(self, promql: str) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, promql: str) -> float | None:
        found = self.query(promql)
        assert len(found) <= 1, found
        return float(found[0]["value"][1]) if found else None

    def scrape(self) -> tuple[float, str]:
        """One scrape of the exporter itself: (seconds it took, the text)."""
        started = time.monotonic()
        with urllib.request.urlopen(self.exporter_url, timeout=30) as reply:
            text = reply.read().decode()
        return time.monotonic() - started, text

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} (last 30 lines):\n"
            + "\n".join((self.workdir / name).read_text(errors="replace").splitlines()[-30:])
            for name in ("exporter.log", "prometheus.log")
        )


async def wait_for(stack: Stack, what: str, check, bound: float = BOUND) -> float:
    """Poll ``check()`` (blocking HTTP, in a thread) until truthy; the seconds it took."""
    started = time.monotonic()
    try:
        with trio.fail_after(bound):
            while not await trio.to_thread.run_sync(check):  # noqa: ASYNC110 - polls HTTP
                await trio.sleep(0.2)
    except trio.TooSlowError:
        raise AssertionError(f"not within {bound:g}s: {what}\n{stack.logs()}") from None
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """By PID: SIGTERM, then SIGKILL if it does not end in 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def wait_ready(check, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(main_domain, tmp_path_factory) -> Iterator[Stack]:
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        reason = "no prometheus binary: apt-get install prometheus (scripts/setup.sh does)"
        if os.environ.get("CI") or os.environ.get("GAGENT_E2E_REQUIRE") == "1":
            pytest.fail(reason + " (CI or GAGENT_E2E_REQUIRE=1 is set: not skipping)")
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("exporter")
    exporter_log = workdir / "exporter.log"
    with open(exporter_log, "wb") as log:
        exporter = subprocess.Popen(
            [
                str(GAGENT), "exporter", "-c", f"{HYPERVISOR}={main_domain.uri}",
                "--listen", "127.0.0.1:0", "--interval", f"{INTERVAL:g}",
                "--interval", f"libvirt={LISTING:g}", "--agent-timeout", f"{AGENT_TIMEOUT:g}",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    prometheus = None
    try:
        found: list[str] = []

        def serving() -> bool:
            found[:] = re.findall(r"http://127\.0\.0\.1:\d+/metrics", exporter_log.read_text())
            return bool(found)

        wait_ready(serving, "gagent exporter", exporter, exporter_log)
        exporter_url = found[0]
        port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {SCRAPE:g}s\n  scrape_timeout: {SCRAPE:g}s\n"
            "scrape_configs:\n  - job_name: gagent\n    static_configs:\n"
            f"      - targets: ['{exporter_url.split('/')[2]}']\n"
        )
        prometheus_log = workdir / "prometheus.log"
        with open(prometheus_log, "wb") as log:
            prometheus = subprocess.Popen(
                [
                    prometheus_bin, f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        prometheus_url = f"http://127.0.0.1:{port}"
        wait_ready(
            lambda: _answers(f"{prometheus_url}/-/ready"), "prometheus", prometheus, prometheus_log
        )
        yield Stack(exporter_url, prometheus_url, exporter, prometheus, workdir)
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(exporter)


def domain_labels(main_domain) -> str:
    return f'hypervisor="{HYPERVISOR}",domain="{main_domain.name}"'


async def test_filesystem_used_bytes_is_what_df_says_in_the_guest(stack, main_domain):
    labels = domain_labels(main_domain)
    used = f'gagent_guest_filesystem_used_bytes{{{labels},mountpoint="/data",fstype="ext4"}}'
    await wait_for(stack, "Prometheus has scraped the exporter", lambda: stack.value(
        'up{job="gagent"}') == 1)  # fmt: skip
    await wait_for(stack, "/data's used bytes in Prometheus", lambda: stack.value(used))
    with trio.fail_after(BOUND):
        async with open_domain_agent(
            main_domain.name, uri=main_domain.uri, transport="libvirt"
        ) as agent:
            result = await run_program(agent, ["/bin/sh", "-c", "df -P -k /data"])
    assert result.succeeded, result
    df_used_kib = int(result.stdout.decode().splitlines()[1].split()[2])

    def agrees() -> bool:  # the exporter's next fs collection and Prometheus's next scrape
        value = stack.value(used)
        return value is not None and abs(value / 1024 - df_used_kib) <= 1

    await wait_for(stack, f"used bytes == df's {df_used_kib} KiB", agrees, bound=INTERVAL * 3)
    size = stack.value(f'gagent_guest_filesystem_size_bytes{{{labels},mountpoint="/data"}}')
    assert size is not None and size >= df_used_kib * 1024
    assert stack.value(f"gagent_domain_running{{{labels}}}") == 1
    channel = f'gagent_agent_channel_connected{{{labels},channel="{GAGENT_CHANNEL}"}}'
    assert stack.value(channel) == 1
    theirs = f'gagent_agent_channel_connected{{{labels},channel="{LIBVIRT_AGENT_CHANNEL}"}}'
    assert stack.value(theirs) == 1
    # the guest ships the freeze dead-man's switch (packaging/fsfreeze/deadman.conf)
    shipped = parse_config(DEADMAN_CONF.read_text(), str(DEADMAN_CONF)).deadline
    assert stack.value(f"gagent_guest_deadman_deadline_seconds{{{labels}}}") == shipped
    assert stack.value(f"gagent_guest_deadman_armed{{{labels}}}") == 0
    info = stack.query(f"gagent_guest_info{{{labels}}}")
    assert info and info[0]["metric"]["hostname"] == main_domain.hostname
    assert stack.value(f'gagent_hypervisor_up{{hypervisor="{HYPERVISOR}"}}') == 1


async def test_agent_up_follows_the_guests_agent_being_stopped_and_started(
    stack, main_domain, e2e_record
):
    up = f"gagent_agent_up{{{domain_labels(main_domain)}}}"
    await wait_for(stack, "agent up before the stop", lambda: stack.value(up) == 1)

    def exporter_says(value: int):
        line = f'gagent_agent_up{{domain="{main_domain.name}",hypervisor="{HYPERVISOR}"}} {value}'
        return lambda: line in stack.scrape()[1]

    with trio.fail_after(BOUND):
        async with open_domain_agent(
            main_domain.name, uri=main_domain.uri, transport="libvirt"
        ) as agent:
            try:
                await gagent_qga(agent, "stop", GAGENT_CHANNEL)
                down = await wait_for(stack, "agent_up 0 at the exporter", exporter_says(0))
                await wait_for(stack, "agent_up 0 in Prometheus", lambda: stack.value(up) == 0)
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(BOUND):
                    await gagent_qga(agent, "start", GAGENT_CHANNEL)
    e2e_record("exporter_agent_down_s", down)
    assert down <= INTERVAL, f"agent_up took {down:.1f}s to fall (interval {INTERVAL:g}s)"
    back = await wait_for(stack, "agent_up 1 again in Prometheus", lambda: stack.value(up) == 1)
    e2e_record("exporter_agent_back_s", back)


async def test_guest_frozen_while_the_guest_is_frozen(stack, main_domain):
    frozen = f"gagent_guest_frozen{{{domain_labels(main_domain)}}}"
    await wait_for(stack, "thawed before the freeze", lambda: stack.value(frozen) == 0)
    # Freeze through gagent's channel and let go of it (no thaw on close): the exporter
    # reads the freeze state on that channel, which serves one client at a time.
    with trio.fail_after(BOUND):
        async with open_domain_agent(main_domain.name, uri=main_domain.uri) as agent:
            assert await agent.fsfreeze_freeze() >= 1
    try:
        # well within the guest's dead-man's switch deadline (60 s)
        await wait_for(stack, "frozen 1", lambda: stack.value(frozen) == 1, bound=INTERVAL * 3)
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(BOUND):
            async with open_domain_agent(main_domain.name, uri=main_domain.uri) as agent:
                await agent.fsfreeze_thaw()
                assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
    await wait_for(stack, "frozen 0 after the thaw", lambda: stack.value(frozen) == 0)


async def test_a_paused_domain_never_makes_a_scrape_wait(stack, main_domain):
    labels = domain_labels(main_domain)
    await wait_for(stack, "agent up", lambda: stack.value(f"gagent_agent_up{{{labels}}}") == 1)
    before = [(await trio.to_thread.run_sync(stack.scrape))[0] for _ in range(5)]
    main_domain.dom.suspend()
    try:
        stale = f"gagent_guest_stale_since_seconds{{{labels}}}"
        await wait_for(stack, "stale since the pause", lambda: stack.value(stale) is not None)
        during = []
        # scrapes over an agent interval and a deadline: collections come due, none may
        # hold a scrape
        deadline = time.monotonic() + INTERVAL + AGENT_TIMEOUT
        while time.monotonic() < deadline:
            seconds, text = await trio.to_thread.run_sync(stack.scrape)
            during.append(seconds)
            await trio.sleep(0.2)
        running = f'gagent_domain_running{{domain="{main_domain.name}",hypervisor="{HYPERVISOR}"}}'
        assert f"{running} 0.0" in text
        assert f'domain="{main_domain.name}"' not in _info_lines(text)  # stale: left out
    finally:
        main_domain.dom.resume()
    # a scrape that waited on the guest would take the agent deadline; from the cache, ms
    assert max(during) < AGENT_TIMEOUT / 2, (before, during)
    await wait_for(stack, "fresh again", lambda: stack.value(stale) is None)


def _info_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("gagent_guest_info{"))

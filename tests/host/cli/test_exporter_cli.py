"""``gagent exporter`` as a process: it serves both formats over HTTP, stops on SIGTERM, and
refuses bad options with one line and exit 2."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gagent.host.cli import main
from gagent.host.inventory.testnode import NodeDomain, write_node

GAGENT = Path(sys.executable).with_name("gagent")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def get(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def test_serves_both_formats_and_stops_on_sigterm(tmp_path):
    uri = write_node(tmp_path / "kvm1.xml", [NodeDomain("vm1"), NodeDomain("vm2", running=False)])
    log = tmp_path / "stderr"
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [str(GAGENT), "exporter", "-c", f"kvm1={uri}", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/metrics", log.read_text())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        url = found.group(0)
        while "connected" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        content_type, text = get(url)
        assert content_type.startswith("text/plain")
        assert 'gagent_hypervisor_up{hypervisor="kvm1"} 1.0' in text
        assert 'gagent_domain_running{domain="vm2",hypervisor="kvm1"} 0.0' in text
        content_type, text = get(url, OPENMETRICS)
        assert content_type.startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
        assert 'gagent_domain_running{domain="vm1",hypervisor="kvm1"} 1.0' in text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
            raise
    assert code == 143, log.read_text()
    assert "interrupted by SIGTERM" in log.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "9851"], "--listen '9851': want ADDR:PORT"),
        (["--listen", "host:99999"], "want ADDR:PORT"),
        (["--interval", "fs=0"], "--interval fs=0: want SECONDS > 0"),
        (["--interval", "disk=5"], "no group 'disk' (one of libvirt, agent, fs, os)"),
        (["--interval", "soon"], "want SECONDS > 0 or GROUP=SECONDS"),
        (["-c", "a=test:///default", "-c", "a=test:///x.xml"], "two hypervisors are named 'a'"),
        (["-c", "not-a-uri"], "is not a libvirt URI"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(capsys, args, message):
    assert main(["exporter", *args, "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_port_in_use_is_one_line_with_the_way_out(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    uri = write_node(tmp_path / "kvm1.xml", [NodeDomain("vm1")])
    try:
        done = subprocess.run(
            [str(GAGENT), "exporter", "-c", f"kvm1={uri}", "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--listen ADDR:PORT" in done.stderr

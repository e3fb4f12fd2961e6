"""``gagent exporter`` as a process: it serves both formats over HTTP, stops on SIGTERM, and
refuses bad options with one line and exit 2."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gagent.host.cli import main
from gagent.host.cli.exporter import _json_log
from gagent.host.inventory.testnode import NodeDomain, write_node

GAGENT = Path(sys.executable).with_name("gagent")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def get(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def terminate(process: subprocess.Popen) -> int:
    """SIGTERM, as systemd stops it; its exit code (killed, and the test failed, if it hangs)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
        raise


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
        code = terminate(process)
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


def test_json_events_are_json_lines_on_stdout_from_listening_to_stopped(tmp_path):
    uri = write_node(tmp_path / "kvm1.xml", [NodeDomain("vm1")])
    missing = f"test://{tmp_path / 'missing.xml'}"  # its poller fails and retries
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            [str(GAGENT), "--json", "exporter", "-c", f"kvm1={uri}", "-c", f"gone={missing}",
             "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all(
            f'"event": "{kind}"' in out_path.read_text() for kind in ("connected", "reconnecting")
        ):
            assert process.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text() + err_path.read_text()
            time.sleep(0.05)
        url = json.loads(out_path.read_text().splitlines()[0])["url"]
        assert 'gagent_hypervisor_up{hypervisor="kvm1"} 1.0' in get(url)[1]  # the URL serves
    finally:
        code = terminate(process)
    assert code == 143, err_path.read_text()
    # with --json all gagent says is on stdout (libxml2 may complain of the missing file)
    assert "gagent" not in err_path.read_text()
    events = [json.loads(line) for line in out_path.read_text().splitlines()]
    listening, stopped = events[0], events[-1]
    assert listening["event"] == "listening" and listening["address"] == "127.0.0.1"
    assert listening["url"] == f"http://127.0.0.1:{listening['port']}/metrics"
    assert listening["hypervisors"] == [
        {"hypervisor": "kvm1", "uri": uri},
        {"hypervisor": "gone", "uri": missing},
    ]
    assert {"event": "connected", "hypervisor": "kvm1", "uri": uri} in events
    [retried, *_] = [event for event in events if event["event"] == "reconnecting"]
    assert (retried["hypervisor"], retried["uri"]) == ("gone", missing) and retried["error"]
    assert stopped == {"event": "stopped", "signal": "SIGTERM"}


def test_json_log_names_each_poller_line(capsys):
    log = _json_log([("kvm1", "qemu+ssh://kvm1/system"), ("kvm2", "test:///default")])
    log("gagent exporter: kvm1 (qemu+ssh://kvm1/system): connected")
    log("gagent exporter: kvm2 (test:///default): cannot connect: refused; reconnecting")
    log("gagent exporter: something else")
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"event": "connected", "hypervisor": "kvm1", "uri": "qemu+ssh://kvm1/system"},
        {"event": "reconnecting", "hypervisor": "kvm2", "uri": "test:///default",
         "error": "cannot connect: refused"},
        {"event": "log", "message": "gagent exporter: something else"},
    ]  # fmt: skip


def test_check_json_is_one_object(capsys, tmp_path):
    uri = write_node(tmp_path / "kvm1.xml", [NodeDomain("vm1"), NodeDomain("vm2")])
    missing = f"test://{tmp_path / 'missing.xml'}"
    code = main(["exporter", "-c", f"kvm1={uri}", "-c", f"gone={missing}", "--check", "--json"])
    out, err = capsys.readouterr()
    assert (code, err) == (8, "")
    found = json.loads(out)
    assert found["ok"] is False
    ok, gone = found["hypervisors"]
    assert ok == {"hypervisor": "kvm1", "uri": uri, "ok": True, "domains": 2}
    assert gone["ok"] is False and gone["error"]

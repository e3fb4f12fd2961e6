"""The probe: its line protocol, the guest loop, the host side, and both together."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import trio
from click.testing import CliRunner

from gagent.errors import AgentUnavailable, ConnectionLost, UsageError
from gagent.guest import probe as guest_probe
from gagent.guest.probe import serve_probe
from gagent.guest.wire import (
    MAX_LINE,
    Ack,
    Fin,
    LineBuffer,
    Other,
    Probe,
    encode_ack,
    encode_fin,
    encode_probe,
    new_nonce,
    parse_line,
)
from gagent.host.cli.probe import channel_probe
from gagent.host.probe import probe_route, probe_socket
from gagent.host.virt import DomainState

N1, N2 = "0123456789abcdef", "fedcba9876543210"


# ---------------------------------------------------------------- wire


def test_round_trip_of_every_message():
    assert parse_line(encode_probe(N1, 2, 3)[:-1]) == Probe(N1, 2, 3)
    assert parse_line(encode_ack(N1, N2, "vm 1")[:-1]) == Ack(N1, N2, "vm1")
    assert parse_line(encode_fin(N2, 1234, 3, 3)[:-1]) == Fin(N2, 1234, 3, 3)
    assert len(new_nonce()) == 16


@pytest.mark.parametrize(
    "line",
    [
        b"GAGENT-PROBE 2 0123456789abcdef 1 1",  # other version
        b"GAGENT-PROBE 1 XYZ 1 1",  # bad nonce
        b"GAGENT-PROBE 1 0123456789abcdef 4 3",  # seq past count
        b"GAGENT-PROBE-FIN 1 0123456789abcdef -5 1 1",
        b'{"error": {"class": "GenericError"}}',
        b"\xff\xfe",
        b"GAGENT-PROBE",
    ],
)
def test_anything_else_is_other(line):
    msg = parse_line(line)
    assert isinstance(msg, Other)
    assert msg.looks_like_agent is line.startswith(b"{")


def test_encoders_refuse_bad_values():
    with pytest.raises(ValueError):
        encode_probe("nothex!", 1, 1)
    with pytest.raises(ValueError):
        encode_fin(N1, -1, 1, 1)
    with pytest.raises(ValueError):
        encode_probe(N1, 0, 1)


def test_line_buffer_splits_and_bounds_lines():
    buf = LineBuffer()
    data = encode_probe(N1, 1, 2) + encode_probe(N2, 2, 2)
    assert buf.feed(data[:10]) == []
    assert buf.feed(data[10:]) == [Probe(N1, 1, 2), Probe(N2, 2, 2)]
    out = buf.feed(b"x" * (MAX_LINE + 10))
    assert len(out) == 1 and isinstance(out[0], Other)
    assert buf.feed(b"more junk\r\n" + encode_probe(N1, 1, 1)) == [Probe(N1, 1, 1)]
    assert buf.feed(b"\r\n\n") == []


# ---------------------------------------------------------------- guest loop


def _pair():
    guest_end, host_end = socket.socketpair()
    guest_end.setblocking(False)
    return guest_end, host_end


def _host_round(host: socket.socket, seq: int, count: int) -> Ack:
    host.sendall(encode_probe(N1, seq, count))
    buf = LineBuffer()
    host.settimeout(5)
    while True:
        for msg in buf.feed(host.recv(4096)):
            if isinstance(msg, Ack):
                host.sendall(encode_fin(msg.guest_nonce, 1000, seq, count))
                return msg


def test_guest_answers_until_the_last_fin():
    guest_end, host_end = _pair()
    result = {}
    t = threading.Thread(
        target=lambda: result.update(o=serve_probe(guest_end.fileno(), timeout=10, guest_name="g"))
    )
    t.start()
    acks = [_host_round(host_end, seq, 2) for seq in (1, 2)]
    t.join(10)
    outcome = result["o"]
    assert outcome.ok and outcome.end == "done" and len(outcome.rounds) == 2
    assert [a.guest for a in acks] == ["g", "g"] and acks[0].nonce == N1
    assert outcome.rounds[0].host_rtt_ns == 1000
    guest_end.close()
    host_end.close()


def test_guest_stops_when_the_host_hangs_up_after_a_round():
    guest_end, host_end = _pair()
    result = {}
    t = threading.Thread(target=lambda: result.update(o=serve_probe(guest_end.fileno())))
    t.start()
    host_end.sendall(b"noise\n")
    _host_round(host_end, 1, 5)
    host_end.close()
    t.join(10)
    assert result["o"].end == "hangup" and result["o"].ok and result["o"].junk_lines == 1
    guest_end.close()


def test_guest_backs_off_while_the_host_end_is_closed(monkeypatch):
    guest_end, host_end = _pair()
    host_end.close()  # POLLHUP, read() == b'' at once: a naive loop would spin
    sleeps = []
    real_sleep = time.sleep
    monkeypatch.setattr(guest_probe.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    t0 = time.monotonic()
    outcome = serve_probe(guest_end.fileno(), timeout=1.5)
    assert outcome.end == "timeout" and not outcome.ok and not outcome.host_seen
    assert time.monotonic() - t0 >= 1.4
    assert 3 <= len(sleeps) <= 12, sleeps  # 0.05, 0.1, 0.2, 0.4, 0.5, ...
    assert max(sleeps) <= guest_probe.BACKOFF_MAX
    guest_end.close()


def test_guest_reports_a_closed_fd():
    guest_end, _host = _pair()
    fd = guest_end.detach()
    os.close(fd)
    assert serve_probe(fd, timeout=1).end == "error"


# ---------------------------------------------------------------- host side


def _listener(tmp_path):
    path = tmp_path / "ch.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    return srv, path


def _guest_thread(srv, *, delay=0.0, reply=None, result=None):
    def run():
        conn, _ = srv.accept()
        with conn:
            time.sleep(delay)
            if reply is not None:
                conn.recv(4096)
                conn.sendall(reply)
                time.sleep(0.5)
                return
            conn.setblocking(False)
            result["o"] = serve_probe(conn.fileno(), timeout=10, guest_name="vm1")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


async def test_host_and_guest_time_round_trips(tmp_path):
    srv, path = _listener(tmp_path)
    result: dict = {}
    t = _guest_thread(srv, delay=1.2, result=result)  # the guest starts late
    events: list[str] = []
    r = await probe_socket(
        path, count=3, wait=10, name="org.gagent.probe.0", on_event=events.append
    )
    await trio.to_thread.run_sync(t.join, 10)
    assert [x.seq for x in r.rounds] == [1, 2, 3] and r.guest == "vm1"
    assert all(x.rtt < 1.0 for x in r.rounds)  # the late answer was not timed
    assert any("waiting for the guest" in e for e in events)
    assert result["o"].end == "done" and len(result["o"].rounds) == 3
    assert "3/3 probes answered by vm1" in r.summary()
    assert r.as_dict()["answered"] == 3
    srv.close()


async def test_host_recognises_an_agent_on_the_port(tmp_path):
    srv, path = _listener(tmp_path)
    _guest_thread(srv, reply=b'{"error": {"class": "GenericError", "desc": "JSON parse error"}}\n')
    add = "gagent channel add vm1 -c test:///default --name org.gagent.probe.0"
    with pytest.raises(AgentUnavailable, match="an agent holds") as info:
        await probe_socket(path, count=1, wait=5, add_port=add)
    assert info.value.hint.startswith(f"probe a port no agent holds: {add}, and in the guest")
    srv.close()


async def test_host_gives_up_after_wait(tmp_path):
    srv, path = _listener(tmp_path)
    with pytest.raises(AgentUnavailable, match="no answer from the guest side") as info:
        await probe_socket(path, count=1, wait=0.5, resend=0.2)
    assert "gagent-guest probe --port" in str(info.value)
    srv.close()


async def test_host_reports_qemu_closing_the_socket(tmp_path):
    srv, path = _listener(tmp_path)

    def close_at_once():
        conn, _ = srv.accept()
        conn.close()

    threading.Thread(target=close_at_once, daemon=True).start()
    with pytest.raises(ConnectionLost):
        await probe_socket(path, count=1, wait=5)
    srv.close()


async def test_host_missing_socket(tmp_path):
    with pytest.raises(AgentUnavailable, match="no agent socket"):
        await probe_socket(tmp_path / "nope.sock", count=1, wait=1)
    with pytest.raises(UsageError):
        await probe_socket(tmp_path / "nope.sock", count=0)


LIVE_XML = """<domain type='qemu'><name>vm1</name><devices>
<channel type='unix'><source mode='bind' path='/run/vm1.sock'/>
<target type='virtio' name='org.gagent.probe.0' state='disconnected'/></channel>
<channel type='pty'><target type='virtio' name='org.gagent.pty.0'/></channel>
</devices></domain>"""


def test_probe_route():
    assert probe_route("vm1", DomainState.RUNNING, LIVE_XML, "org.gagent.probe.0") == (
        "/run/vm1.sock"
    )
    with pytest.raises(AgentUnavailable, match=r"no channel named org\.x"):
        probe_route("vm1", DomainState.RUNNING, LIVE_XML, "org.x")
    with pytest.raises(AgentUnavailable, match="not a unix socket"):
        probe_route("vm1", DomainState.RUNNING, LIVE_XML, "org.gagent.pty.0")
    with pytest.raises(AgentUnavailable, match="virsh start vm1"):
        probe_route("vm1", DomainState.SHUTOFF, "", "org.gagent.probe.0")
    with pytest.raises(AgentUnavailable, match="virsh resume vm1"):
        probe_route("vm1", DomainState.PAUSED, LIVE_XML, "org.gagent.probe.0")
    with pytest.raises(UsageError, match="belongs to libvirt"):
        probe_route("vm1", DomainState.RUNNING, LIVE_XML, "org.qemu.guest_agent.0")


def test_cli_channel_probe_over_a_socket(tmp_path):
    srv, path = _listener(tmp_path)
    result: dict = {}
    t = _guest_thread(srv, result=result)
    out = CliRunner().invoke(
        channel_probe, ["--socket", str(path), "--count", "2", "--wait", "10", "--json"]
    )
    t.join(10)
    assert out.exit_code == 0, out.output
    assert '"answered": 2' in out.stdout
    srv.close()


def test_cli_channel_probe_needs_a_target():
    out = CliRunner().invoke(channel_probe, [])
    assert out.exit_code == 2 and "give DOMAIN, or --socket PATH" in out.output

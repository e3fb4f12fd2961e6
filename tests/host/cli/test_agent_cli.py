"""``gagent agent``: in-process through gagent.host.cli.main (and the installed entry
point through a subprocess), against the real qemu-ga on this host (fixture: every
RPC that could change the host is blocked) and libvirt's test driver."""

from __future__ import annotations

import json
import os
import platform
import re
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import libvirt
import pytest

from gagent.host.cli import main

GAGENT = Path(sys.executable).with_name("gagent")
TEST_URI = "test:///default"
TIMEOUT = 30  # for subprocesses


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The error output must be exactly one line starting with 'gagent: error: '."""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("gagent: error: "), lines[0]
    return lines[0]


def agent_json(capsys, sock: Path, *argv: str):
    code, out, err = run(capsys, "agent", "--socket", str(sock), "--json", *argv)
    # nothing on stderr but a copy's progress events (host/cli/progress.py)
    said = [line for line in err.splitlines() if json.loads(line)["event"] != "progress"]
    assert (code, said) == (0, []), err
    return json.loads(out)


@pytest.fixture
def sock(qemu_ga) -> Path:
    return qemu_ga.socket_path


# ------------------------------------------------------------ helpers: peers


class RecordingProxy:
    """A unix socket forwarding each client to the agent, recording what clients sent."""

    def __init__(self, path: Path, upstream: Path):
        self.path, self.upstream = path, upstream
        self.sent = bytearray()
        self.stop = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.listener.settimeout(0.05)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
                up.connect(str(self.upstream))
                self._pump(client, up)

    def _pump(self, client: socket.socket, up: socket.socket) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([client, up], [], [], 0.05)
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                if s is client:
                    self.sent += data
                    up.sendall(data)
                else:
                    client.sendall(data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def proxy(sock, tmp_path):
    p = RecordingProxy(tmp_path / "proxy.sock", sock)
    yield p
    p.close()


@pytest.fixture
def silent_socket(tmp_path) -> Path:
    """Listens and never accepts: connecting works (the backlog), nothing ever answers."""
    path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    yield path
    listener.close()


@pytest.fixture
def hanging_up_socket(tmp_path) -> Path:
    """Accepts every client and closes the connection at once."""
    path = tmp_path / "hangup.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(5)
    listener.close()


# ------------------------------------------------------------- commands


def test_ping(capsys, sock):
    assert run(capsys, "agent", "--socket", str(sock), "ping") == (0, "ok\n", "")
    assert agent_json(capsys, sock, "ping") == {}  # never null


def test_info(capsys, sock):
    info = agent_json(capsys, sock, "info")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", info["version"])
    assert info["commands"]["guest-ping"]["enabled"] is True
    for blocked in ("guest-exec", "guest-fsfreeze-freeze", "guest-shutdown"):
        assert info["commands"][blocked]["enabled"] is False
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "info")
    assert code == 0
    assert out.startswith(f"version: {info['version']}\nenabled (")
    disabled = next(line for line in out.splitlines() if line.startswith("disabled ("))
    assert "guest-fsfreeze-freeze" in disabled.split()


def test_osinfo(capsys, sock):
    info = agent_json(capsys, sock, "osinfo")
    assert info["kernel_release"] == platform.release()
    assert info["machine"] == platform.machine()
    os_release = platform.freedesktop_os_release()
    assert info["id"] == os_release["ID"]
    assert info["pretty_name"] == os_release.get("PRETTY_NAME")
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "osinfo")
    assert code == 0 and out.splitlines()[0].split() == ["field", "value"]
    assert re.search(rf"^kernel_release\s+{re.escape(platform.release())}$", out, re.M)


def test_hostname(capsys, sock):
    assert agent_json(capsys, sock, "hostname") == socket.gethostname()
    assert run(capsys, "agent", "--socket", str(sock), "hostname") == (
        0, socket.gethostname() + "\n", "",
    )  # fmt: skip


def test_users(capsys, sock):
    users = agent_json(capsys, sock, "users")
    assert isinstance(users, list)
    assert all(isinstance(u["user"], str) and u["login_time"] > 0 for u in users)
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "users")
    assert code == 0
    if users:
        assert out.split()[:2] == ["user", "domain"]
    else:
        assert out == "(nobody logged in)\n"


def test_interfaces(capsys, sock):
    nics = agent_json(capsys, sock, "interfaces")
    names = {nic["name"] for nic in nics}
    assert names <= {name for _, name in socket.if_nameindex()}
    lo = next(nic for nic in nics if nic["name"] == "lo")
    assert {"address": "127.0.0.1", "type": "ipv4", "prefix": 8} in lo["ip_addresses"]
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "interfaces")
    assert code == 0 and out.splitlines()[0].split() == ["interface", "mac", "addresses"]
    assert re.search(r"^lo\s+00:00:00:00:00:00\s+127\.0\.0\.1/8", out, re.M)


def mounts() -> dict[str, str]:
    table = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mountpoint, fstype, *_ = line.split()
        table[mountpoint.replace("\\040", " ")] = fstype
    return table


def test_fsinfo(capsys, sock):
    filesystems = agent_json(capsys, sock, "fsinfo")
    mounted = mounts()
    for fs in filesystems:
        assert mounted[fs["mountpoint"]] == fs["type"]
        if fs["total_bytes"] is not None:
            st = os.statvfs(fs["mountpoint"])
            assert fs["total_bytes"] <= st.f_frsize * st.f_blocks
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "fsinfo")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "mountpoint", "type", "device", "used", "total", "use%", "disks",
    ]  # fmt: skip
    assert len(out.splitlines()) == 1 + len(filesystems)


def test_disks(capsys, sock):
    disks = agent_json(capsys, sock, "disks")
    for disk in disks:
        assert disk["name"].startswith("/dev/") and os.path.exists(disk["name"])
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "disks")
    assert code == 0 and out.split()[:3] == ["name", "kind", "depends"]


def test_time(capsys, sock):
    guest_ns = agent_json(capsys, sock, "time")
    assert abs(guest_ns - time.time_ns()) < 5e9
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "time")
    assert code == 0
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 \(\d+ ns since the epoch\)\n", out
    )


def test_fsfreeze_status(capsys, sock):
    assert agent_json(capsys, sock, "fsfreeze", "status") == "thawed"
    assert run(capsys, "agent", "--socket", str(sock), "fsfreeze", "status") == (
        0, "thawed\n", "",
    )  # fmt: skip


def test_call_with_json_arguments(capsys, sock):
    assert agent_json(capsys, sock, "call", "guest-sync", '{"id": 424242}') == 424242
    reply = agent_json(capsys, sock, "call", "guest-get-host-name")
    assert reply == {"host-name": socket.gethostname()}


def test_copy_to_and_from(capsys, sock, tmp_path):
    payload = os.urandom(300_000) + b"\n\x00end"
    local, guest, back = tmp_path / "local.bin", tmp_path / "guest.bin", tmp_path / "back.bin"
    local.write_bytes(payload)
    result = agent_json(capsys, sock, "copy-to", "--in-place", str(local), str(guest))
    assert result == {"bytes": len(payload), "to": str(guest)}
    assert guest.read_bytes() == payload  # the "guest" is this host
    result = agent_json(capsys, sock, "copy-from", str(guest), str(back))
    assert result == {"bytes": len(payload), "to": str(back)}
    assert back.read_bytes() == payload
    code, out, _ = run(capsys, "agent", "--socket", str(sock), "copy-from", str(guest), str(back))
    assert (code, out) == (0, f"copied {len(payload)} bytes\n")


# ------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("json_args", "message"),
    [("{bad", "JSON-ARGS is not valid JSON"), ("[1, 2]", "JSON-ARGS must be a JSON object")],
)
def test_bad_json_arguments_exit_2(capsys, sock, json_args, message):
    code, out, err = run(capsys, "agent", "--socket", str(sock), "call", "guest-ping", json_args)
    assert (code, out) == (2, "")
    assert message in error_line(err)


def test_no_target_exit_2(capsys):
    code, _, err = run(capsys, "agent", "ping")
    assert code == 2
    assert "DOMAIN or --socket PATH" in error_line(err)


def test_domain_and_socket_exit_2(capsys, sock):
    code, _, err = run(capsys, "agent", "--socket", str(sock), "-c", TEST_URI, "test", "ping")
    assert code == 2
    assert "not both" in error_line(err)


def test_missing_socket_exit_3(capsys, tmp_path):
    missing = tmp_path / "missing.sock"
    code, out, err = run(capsys, "agent", "--socket", str(missing), "ping")
    assert (code, out) == (3, "")
    assert str(missing) in error_line(err)


def test_stale_socket_exit_3(capsys, tmp_path):
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # never listens, then closes: a leftover socket file
    code, _, err = run(capsys, "agent", "--socket", str(stale), "ping")
    assert code == 3
    assert "nothing is listening" in error_line(err)


def test_not_a_socket_exit_3(capsys, tmp_path):
    plain = tmp_path / "plain-file"
    plain.write_text("x")
    code, _, err = run(capsys, "agent", "--socket", str(plain), "ping")
    assert code == 3
    assert "is not a unix socket" in error_line(err)


def test_timeout_exit_4(capsys, silent_socket):
    start = time.monotonic()
    code, out, err = run(
        capsys, "agent", "--socket", str(silent_socket), "--timeout", "0.5", "ping"
    )
    elapsed = time.monotonic() - start
    assert (code, out) == (4, "")
    line = error_line(err)
    assert f"timed out after 0.5s waiting for {silent_socket}" in line
    assert 0.4 < elapsed < 5


def test_connection_closed_by_peer_exit_7(capsys, hanging_up_socket):
    code, _, err = run(
        capsys, "agent", "--socket", str(hanging_up_socket), "--timeout", "5", "ping"
    )
    assert code == 7
    error_line(err)


@pytest.mark.parametrize(
    "argv",
    [("fsfreeze", "freeze"), ("fsfreeze", "freeze", "--mountpoint", "/")],
    ids=["all", "list"],
)
def test_freeze_on_the_host_is_refused_exit_5_and_nothing_frozen(capsys, sock, proxy, argv):
    code, out, err = run(capsys, "agent", "--socket", str(proxy.path), *argv)
    assert (code, out) == (5, "")
    assert "disabled" in error_line(err)
    # refused before sending: the agent never saw a freeze request
    assert b"guest-fsfreeze-freeze" not in proxy.sent
    assert b"guest-info" in proxy.sent
    assert agent_json(capsys, sock, "fsfreeze", "status") == "thawed"


def test_exec_on_the_host_is_refused_exit_5(capsys, sock, proxy):
    code, out, err = run(capsys, "agent", "--socket", str(proxy.path), "exec", "--", "/bin/true")
    assert (code, out) == (5, "")
    assert "guest-exec" in error_line(err)
    assert b"guest-exec" not in proxy.sent


def test_unknown_command_exit_5(capsys, sock):
    code, _, err = run(capsys, "agent", "--socket", str(sock), "call", "guest-no-such-thing")
    assert code == 5
    assert "does not implement" in error_line(err)


def test_agent_error_exit_6(capsys, sock, tmp_path):
    missing = tmp_path / "not-there"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(
        capsys, "agent", "--socket", str(sock), "copy-from", str(missing), str(out_dir / "copy")
    )
    assert (code, out) == (6, "")
    line = error_line(err)
    assert "guest-file-open" in line and "No such file or directory" in line
    assert list(out_dir.iterdir()) == []  # no file, no leftover temporary


# ----------------------------------------------------------- by domain


def test_unknown_domain_exit_8(capsys):
    code, out, err = run(capsys, "agent", "-c", TEST_URI, "gagent-no-such-domain", "ping")
    assert (code, out) == (8, "")
    assert f"no domain 'gagent-no-such-domain' on {TEST_URI}" in error_line(err)


def test_domain_without_channel_exit_3_with_hint(capsys):
    code, _, err = run(capsys, "agent", "-c", TEST_URI, "test", "ping")
    assert code == 3
    assert error_line(err).endswith("(add one: gagent channel add test -c test:///default)")


def test_domain_by_id_positional(capsys):
    code, _, err = run(capsys, "agent", "--json", "-c", TEST_URI, "1", "hostname")
    assert code == 3  # 'test' has ID 1 in the test driver, and no channel
    assert "domain test has no agent channel" in error_line(err)


@pytest.fixture
def domain_with_agent(sock):
    """A running test-driver domain whose gagent channel's path is the real qemu-ga."""
    conn = libvirt.open(TEST_URI)
    name = f"gagent-cli-{uuid.uuid4().hex[:10]}"
    xml = (
        f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
        "<os><type>hvm</type></os><devices><channel type='unix'>"
        f"<source mode='bind' path='{sock}'/><target type='virtio' name='org.gagent.agent.0'/>"
        "</channel></devices></domain>"
    )
    dom = conn.defineXML(xml)
    dom.create()
    yield name
    dom.destroy()
    dom.undefine()
    conn.close()


def test_domain_reached_through_its_channel_socket(capsys, domain_with_agent):
    code, out, err = run(capsys, "agent", "-c", TEST_URI, domain_with_agent, "--json", "hostname")
    assert (code, err) == (0, "")
    assert json.loads(out) == socket.gethostname()


def test_domain_uri_from_environment(capsys, monkeypatch, domain_with_agent):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", TEST_URI)
    assert run(capsys, "agent", domain_with_agent, "ping") == (0, "ok\n", "")


# ----------------------------------------------------------- entry point


def test_entry_point_subprocess(sock):
    proc = subprocess.run(
        [str(GAGENT), "agent", "--socket", str(sock), "--json", "hostname"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout) == socket.gethostname()


def test_entry_point_subprocess_error(tmp_path):
    proc = subprocess.run(
        [str(GAGENT), "agent", "--socket", str(tmp_path / "none.sock"), "ping"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (3, "")
    error_line(proc.stderr)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["freeze"], "No such command 'freeze'. Did you mean 'fsfreeze'? (see: gagent --help)"),
        (["agent", "vm1"], "missing COMMAND after 'gagent agent vm1' (one of: call, "),
    ],
)
def test_entry_point_subprocess_usage_error(argv, line):
    proc = subprocess.run([str(GAGENT), *argv], capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "Usage:" not in proc.stderr
    assert error_line(proc.stderr).startswith(f"gagent: error: {line}")


@pytest.mark.parametrize("as_json", [False, True])
def test_exec_says_when_the_guest_cut_the_output(capsys, sock, monkeypatch, as_json):
    from gagent import programs

    async def cut_short(agent, argv, **kw):
        return programs.ProgramResult(
            argv=tuple(argv), pid=1, exit_code=0, signal=None, stdout=b"o" * 10,
            stderr=b"e", stdout_truncated=True, stderr_truncated=False,
        )  # fmt: skip

    monkeypatch.setattr(programs, "run_program", cut_short)
    argv = ["agent", "--socket", str(sock), *(["--json"] if as_json else []), "exec", "--", "x"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    if as_json:
        assert json.loads(out)["stdout_truncated"] is True  # the flag says it
    else:
        assert out == "o" * 10
        warnings = [line for line in err.splitlines() if line.startswith("gagent: warning:")]
        assert len(warnings) == 1 and "first 16 MiB of the program's stdout" in warnings[0]
        assert "copy-from" in warnings[0]

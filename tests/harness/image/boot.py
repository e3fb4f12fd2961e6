#!/usr/bin/env python3
"""Boot the e2e guest image with plain QEMU (no libvirt), and describe it for libvirt.

Stdlib only.  ``boot_qemu()`` is a context manager::

    image = build_image(cache_dir, repo_python_trees())
    with boot_qemu(image, tmp_path) as guest:
        guest.sockets["org.gagent.agent.0"]   # host end of that virtio-serial port
        guest.pid                             # QEMU's PID
        with AgentConnection(guest.sockets["org.gagent.agent.0"]) as agent:
            agent.execute("guest-ping")

It copies the data disk template into ``workdir``, starts
``qemu-system-x86_64 -accel tcg`` (never KVM) with direct kernel boot, one
virtserialport per name in ``ports`` (each backed by a listening unix socket;
the guest runs qemu-ga on each of ``agent_ports``, default: all of ``ports``),
a QMP socket and the serial console in ``workdir/serial.log``; waits (bounded)
until the agent on the first port answers ``guest-sync-delimited``; and on
exit always kills QEMU by its PID (SIGKILL; it is a throwaway TCG guest).
``start_qemu()``/``stop_qemu()`` are the same steps without ``with``.

``domain_xml()`` gives a minimal libvirt domain for the same image: type
'qemu' (TCG), direct kernel boot, the virtio data disk, the serial console to
a file, and NO channel (the project adds its own).

``python tests/harness/image/boot.py`` builds the image (repository trees
included), boots it and runs a smoke test of the agent over the socket; it
prints what it measured.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

DEFAULT_PORTS = ("org.gagent.agent.0",)
QEMU = "qemu-system-x86_64"


class _Image(Protocol):  # build.GuestImage, without importing it
    @property
    def kernel(self) -> Path: ...
    @property
    def initrd(self) -> Path: ...
    @property
    def data_disk_template(self) -> Path: ...
    @property
    def cmdline(self) -> str: ...


class BootError(RuntimeError):
    """QEMU did not start, died, or the agent did not answer in time."""


class AgentTimeout(BootError):
    """The agent did not answer in time."""


class AgentError(RuntimeError):
    """The agent answered with an error object."""

    def __init__(self, command: str, error: dict) -> None:
        super().__init__(f"{command}: {error.get('class')}: {error.get('desc')}")
        self.error = error


# --------------------------------------------------------------------------
# A minimal blocking QGA client (enough for the harness; the project has its own)


class AgentConnection:
    """Blocking QGA client on a QEMU chardev unix socket."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(os.fspath(path))
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""
        self._id = int(time.time() * 1000) % 1_000_000_000

    def __enter__(self) -> AgentConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _recv(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionResetError("agent socket closed by QEMU")
        self.buf += data
        return True

    def sync(self, timeout: float = 10.0, attempt: float = 1.0) -> int:
        """guest-sync-delimited until answered; returns the id echoed.

        A guest whose agent is not up yet just does not answer: the request
        is repeated every ``attempt`` seconds with a fresh id, and answers to
        older ids are skipped.  Everything before the agent's 0xFF is thrown
        away (qemu-ga 7.2 first answers our own leading 0xFF with a JSON
        parse-error line).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._id += 1
            want = self._id
            req = {"execute": "guest-sync-delimited", "arguments": {"id": want}}
            self.sock.sendall(b"\xff" + json.dumps(req).encode() + b"\n")
            step = min(deadline, time.monotonic() + attempt)
            while True:
                idx = self.buf.find(b"\xff")
                if idx >= 0:
                    nl = self.buf.find(b"\n", idx)
                    if nl >= 0:
                        line, self.buf = self.buf[idx + 1 : nl], self.buf[nl + 1 :]
                        with contextlib.suppress(ValueError):
                            if json.loads(line).get("return") == want:
                                return want
                        continue
                if not self._recv(step):
                    break
        raise AgentTimeout(f"agent did not answer guest-sync-delimited within {timeout:.0f} s")

    def send(self, command: str, arguments: dict | None = None) -> None:
        msg: dict[str, Any] = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def read_reply(self, command: str = "?", timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if not self._recv(deadline):
                raise AgentTimeout(f"{command}: no reply within {timeout:.0f} s")
        line, self.buf = self.buf.split(b"\n", 1)
        reply = json.loads(line.lstrip(b"\xff"))
        if "error" in reply:
            raise AgentError(command, reply["error"])
        return reply.get("return")

    def execute(self, command: str, arguments: dict | None = None, timeout: float = 30.0) -> Any:
        self.send(command, arguments)
        return self.read_reply(command, timeout)

    def exec_wait(
        self, path: str, args: Sequence[str] = (), timeout: float = 60.0, **extra: Any
    ) -> dict:
        """guest-exec with captured output, polled to the end; out/err decoded."""
        pid = self.execute(
            "guest-exec", {"path": path, "arg": list(args), "capture-output": True, **extra}
        )["pid"]
        deadline = time.monotonic() + timeout
        while True:
            st = self.execute("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                for key in ("out-data", "err-data"):
                    if key in st:
                        st[key] = base64.b64decode(st[key]).decode(errors="replace")
                return st
            if time.monotonic() > deadline:
                raise AgentTimeout(f"guest-exec {path} still running after {timeout:.0f} s")
            time.sleep(0.1)


# --------------------------------------------------------------------------
# Plain QEMU


@dataclasses.dataclass
class BootedGuest:
    pid: int
    process: subprocess.Popen
    sockets: dict[str, Path]  # port name -> unix socket path (host side)
    qmp_socket: Path
    serial_log: Path
    qemu_log: Path
    data_disk: Path  # this run's copy of the template
    workdir: Path
    argv: list[str]
    started: float  # time.monotonic() just before QEMU was started
    boot_seconds: float | None = None  # QEMU start -> first sync answer
    _socket_dir: Path | None = None  # short-path dir of our own, removed at stop


def _socket_dir(workdir: Path, longest: str) -> tuple[Path, Path | None]:
    # sun_path is 108 bytes: fall back to a short private dir under /tmp.
    if len(os.fsencode(workdir / longest)) < 100:
        return workdir, None
    short = Path(tempfile.mkdtemp(prefix="gagent-qemu-"))
    return short, short


def qemu_argv(
    image: _Image,
    *,
    data_disk: Path,
    sockets: dict[str, Path],
    qmp_socket: Path,
    serial_log: Path,
    hostname: str,
    agent_ports: Sequence[str] | None = None,
    memory_mib: int = 512,
    smp: int = 2,
    extra_cmdline: str = "",
    extra_args: Sequence[str] = (),
) -> list[str]:
    agents = list(sockets) if agent_ports is None else list(agent_ports)
    append = f"{image.cmdline} gagent.hostname={hostname}"
    if agents:
        append += f" gagent.ports={','.join(agents)}"
    if extra_cmdline:
        append += " " + extra_cmdline
    argv = [
        QEMU, "-accel", "tcg", "-machine", "pc", "-m", str(memory_mib), "-smp", str(smp),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
        "-drive", f"file={data_disk},if=virtio,format=raw",
        "-serial", f"file:{serial_log}",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser0",
    ]  # fmt: skip
    for i, (name, path) in enumerate(sockets.items()):
        argv += [
            "-chardev", f"socket,id=ga{i},path={path},server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev=ga{i},name={name}",
        ]  # fmt: skip
    return argv + list(extra_args)


def start_qemu(
    image: _Image,
    workdir: Path,
    ports: Sequence[str] = DEFAULT_PORTS,
    hostname: str = "gagent-e2e",
    *,
    agent_ports: Sequence[str] | None = None,
    memory_mib: int = 512,
    smp: int = 2,
    extra_cmdline: str = "",
    extra_args: Sequence[str] = (),
) -> BootedGuest:
    """Start QEMU (does not wait for the agent); stop it with stop_qemu()."""
    if not ports:
        raise ValueError("at least one port is needed")
    if len(set(ports)) != len(ports):
        raise ValueError(f"duplicate port names: {ports}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_disk = workdir / "data.ext4"
    shutil.copyfile(image.data_disk_template, data_disk)
    sockdir, own = _socket_dir(workdir, f"ga{len(ports)}.sock")
    sockets = {name: sockdir / f"ga{i}.sock" for i, name in enumerate(ports)}
    qmp_socket = sockdir / "qmp.sock"
    for p in (*sockets.values(), qmp_socket):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    serial_log = workdir / "serial.log"
    qemu_log = workdir / "qemu.log"
    argv = qemu_argv(
        image,
        data_disk=data_disk,
        sockets=sockets,
        qmp_socket=qmp_socket,
        serial_log=serial_log,
        hostname=hostname,
        agent_ports=agent_ports,
        memory_mib=memory_mib,
        smp=smp,
        extra_cmdline=extra_cmdline,
        extra_args=extra_args,
    )
    started = time.monotonic()
    with open(qemu_log, "wb") as log:
        # Same session and process group as the caller on purpose: a Ctrl-C or
        # a hang-up of the test run reaches QEMU too, so it does not outlive it.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return BootedGuest(
        pid=proc.pid,
        process=proc,
        sockets=sockets,
        qmp_socket=qmp_socket,
        serial_log=serial_log,
        qemu_log=qemu_log,
        data_disk=data_disk,
        workdir=workdir,
        argv=argv,
        started=started,
        _socket_dir=own,
    )


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(none)"


def wait_for_agent(guest: BootedGuest, port: str | None = None, timeout: float = 60.0) -> float:
    """Wait (bounded) until the agent on ``port`` answers; returns seconds since start."""
    port = port or next(iter(guest.sockets))
    path = guest.sockets[port]
    deadline = time.monotonic() + timeout

    def check_alive() -> None:
        if guest.process.poll() is not None:
            raise BootError(
                f"QEMU exited with {guest.process.returncode}\n--- qemu.log:\n"
                f"{_tail(guest.qemu_log)}\n--- serial.log:\n{_tail(guest.serial_log)}"
            )

    while not path.exists():
        check_alive()
        if time.monotonic() > deadline:
            raise BootError(f"QEMU did not create {path}")
        time.sleep(0.02)
    # One connection for the whole wait: requests sent before the guest opened
    # its end stay queued and are answered as soon as qemu-ga is up.
    agent: AgentConnection | None = None
    try:
        while True:
            check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgentTimeout(
                    f"agent on {port} did not answer within {timeout:.0f} s\n"
                    f"--- serial.log:\n{_tail(guest.serial_log)}"
                )
            try:
                if agent is None:
                    agent = AgentConnection(path)
                agent.sync(timeout=min(left, 2.0), attempt=0.5)
                break
            except AgentTimeout:
                continue
            except OSError:  # QEMU went away or reset the socket: check, retry
                if agent is not None:
                    agent.close()
                    agent = None
                time.sleep(0.1)
    finally:
        if agent is not None:
            agent.close()
    seconds = time.monotonic() - guest.started
    if guest.boot_seconds is None:
        guest.boot_seconds = seconds
    return seconds


def stop_qemu(guest: BootedGuest, timeout: float = 10.0) -> int | None:
    """Kill QEMU by its PID (if still running), reap it, remove our socket dir."""
    try:
        if guest.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(guest.pid, signal.SIGKILL)
        try:
            return guest.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
    finally:
        if guest._socket_dir is not None:
            shutil.rmtree(guest._socket_dir, ignore_errors=True)


@contextlib.contextmanager
def boot_qemu(
    image: _Image,
    workdir: Path,
    ports: Sequence[str] = DEFAULT_PORTS,
    hostname: str = "gagent-e2e",
    *,
    wait: bool = True,
    timeout: float = 60.0,
    agent_ports: Sequence[str] | None = None,
    memory_mib: int = 512,
    smp: int = 2,
    extra_cmdline: str = "",
    extra_args: Sequence[str] = (),
) -> Iterator[BootedGuest]:
    """Boot the guest; yield once the first agent port answers (if ``wait``)."""
    guest = start_qemu(
        image,
        workdir,
        ports,
        hostname,
        agent_ports=agent_ports,
        memory_mib=memory_mib,
        smp=smp,
        extra_cmdline=extra_cmdline,
        extra_args=extra_args,
    )
    try:
        agents = list(ports) if agent_ports is None else list(agent_ports)
        if wait and agents:
            wait_for_agent(guest, agents[0], timeout)
        yield guest
    finally:
        stop_qemu(guest)


def wait_exit(guest: BootedGuest, timeout: float = 30.0) -> int | None:
    """Wait (bounded) for QEMU to exit by itself, e.g. after guest-shutdown."""
    try:
        return guest.process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


# --------------------------------------------------------------------------
# libvirt


def domain_xml(
    image: _Image,
    name: str,
    data_disk: Path,
    serial_log: Path,
    *,
    ports: Sequence[str] = DEFAULT_PORTS,
    hostname: str | None = None,
    memory_mib: int = 512,
    vcpus: int = 2,
    extra_cmdline: str = "",
    disk_format: str = "raw",
) -> str:
    """Minimal libvirt domain XML (TCG, direct kernel boot) for the e2e image.

    ``data_disk`` must be this domain's own copy of ``image.data_disk_template``
    (or, with ``disk_format='qcow2'``, an overlay on it).
    There is no <channel>: the caller adds its own (a virtio-serial controller
    is already there for it).  ``ports`` only goes into the kernel command line
    (``gagent.ports=``) so the guest starts qemu-ga on those port names.
    ACPI is on so that the guest's poweroff really ends the domain.
    """
    cmdline = f"{image.cmdline} gagent.hostname={hostname or name}"
    if ports:
        cmdline += f" gagent.ports={','.join(ports)}"
    if extra_cmdline:
        cmdline += " " + extra_cmdline
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "vcpu").text = str(vcpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(Path(image.kernel).resolve())
    ET.SubElement(os_el, "initrd").text = str(Path(image.initrd).resolve())
    ET.SubElement(os_el, "cmdline").text = cmdline
    ET.SubElement(ET.SubElement(dom, "features"), "acpi")
    ET.SubElement(dom, "clock", offset="utc")
    for event, action in (
        ("on_poweroff", "destroy"),
        ("on_reboot", "destroy"),
        ("on_crash", "destroy"),
    ):
        ET.SubElement(dom, event).text = action
    dev = ET.SubElement(dom, "devices")
    emulator = shutil.which(QEMU)
    if emulator:
        ET.SubElement(dev, "emulator").text = emulator
    disk = ET.SubElement(dev, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type=disk_format)
    ET.SubElement(disk, "source", file=str(Path(data_disk).resolve()))
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    ET.SubElement(dev, "controller", type="virtio-serial", index="0")
    # No USB controller (libvirt adds one by default): nothing uses it, and
    # probing it costs boot time under TCG.
    ET.SubElement(dev, "controller", type="usb", index="0", model="none")
    serial = ET.SubElement(dev, "serial", type="file")
    ET.SubElement(serial, "source", path=str(Path(serial_log).resolve()))
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(dev, "console", type="file")
    ET.SubElement(console, "source", path=str(Path(serial_log).resolve()))
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(dev, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


# --------------------------------------------------------------------------
# Smoke test


def smoke(cache_dir: Path | None = None, workdir: Path | None = None) -> int:
    """Build, boot, exercise the agent, shut down.  Prints what it measured."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from build import build_image, repo_python_trees

    report: dict[str, Any] = {}
    passed: list[str] = []
    failures: list[str] = []

    def check(label: str, ok: bool, detail: Any = None) -> None:
        report[label] = detail if detail is not None else ok
        (passed if ok else failures).append(label)
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {json.dumps(detail)[:300]}", flush=True)

    image = build_image(cache_dir, repo_python_trees())
    print(f"image: build {image.build_seconds:.2f} s, cached={image.cached}", flush=True)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gagent-boot-")))
        with boot_qemu(image, workdir, hostname="gagent-smoke") as guest:
            print(f"qemu pid {guest.pid}; agent answered {guest.boot_seconds:.2f} s after start")
            report["boot_to_agent_seconds"] = round(guest.boot_seconds or -1, 2)
            with AgentConnection(guest.sockets[DEFAULT_PORTS[0]]) as agent:
                agent.sync()
                check("guest-ping", agent.execute("guest-ping") == {})
                info = agent.execute("guest-info")
                check("guest-info", bool(info.get("version")), info.get("version"))
                osinfo = agent.execute("guest-get-osinfo")
                check("guest-get-osinfo", osinfo.get("id") == "gagent-e2e", osinfo)
                host = agent.execute("guest-get-host-name")
                check("guest-get-host-name", host == {"host-name": "gagent-smoke"}, host)
                fsinfo = agent.execute("guest-get-fsinfo")
                data = [f for f in fsinfo if f.get("mountpoint") == "/data"]
                check(
                    "guest-get-fsinfo /data ext4", bool(data) and data[0]["type"] == "ext4", fsinfo
                )
                t = time.monotonic()
                res = agent.exec_wait("/bin/sh", ["-c", "echo hi"])
                check("guest-exec sh echo hi", res.get("out-data") == "hi\n", res)
                report["exec_sh_seconds"] = round(time.monotonic() - t, 2)
                frozen = agent.execute("guest-fsfreeze-freeze")
                status = agent.execute("guest-fsfreeze-status")
                thawed = agent.execute("guest-fsfreeze-thaw")
                after = agent.execute("guest-fsfreeze-status")
                check(
                    "guest-fsfreeze freeze/status/thaw",
                    frozen >= 1 and status == "frozen" and thawed >= 1 and after == "thawed",
                    [frozen, status, thawed, after],
                )
                t = time.monotonic()
                res = agent.exec_wait(
                    "python3", ["-c", "import serial, sys; print(sys.version)"], timeout=120
                )
                report["exec_python_seconds"] = round(time.monotonic() - t, 2)
                check("guest-exec python3 import serial", res.get("exitcode") == 0, res)
                res = agent.exec_wait(
                    "python3",
                    ["-c", "import sys; print([p for p in sys.path if 'gagent' in p])"],
                )
                check("PYTHONPATH has /opt/gagent", "/opt/gagent" in res.get("out-data", ""), res)
                res = agent.exec_wait("/bin/ls", ["/opt/gagent/gagent", "/opt/gagent/gagent/guest"])
                check("python trees in /opt/gagent", res.get("exitcode") == 0, res)
                res = agent.exec_wait("/etc/gagent/sysvinit/gagent-qga", ["status"])
                check("gagent-qga status", res.get("exitcode") == 0, res)
                t = time.monotonic()
                agent.send("guest-shutdown")
            code = wait_exit(guest, 60)
            report["shutdown_seconds"] = round(time.monotonic() - t, 2)
            check("guest-shutdown ends QEMU", code is not None, code)
    print(json.dumps(report, indent=1, default=str))
    if failures:
        print(f"failed: {failures}")
    print(f"smoke: {len(passed)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="boot the e2e guest and smoke-test its agent")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs and disk here")
    args = ap.parse_args()
    sys.exit(smoke(args.cache_dir, args.workdir))

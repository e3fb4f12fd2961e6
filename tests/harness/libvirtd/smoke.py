"""Smoke check of the private libvirtd harness (a script, not a pytest test).

Run as root with the project's venv (it needs libvirt-python)::

    .venv/bin/python tests/harness/libvirtd/smoke.py [--keep-workdir] [--kernel PATH]

It starts the daemon in a temporary directory, defines and starts a TCG
domain that boots a Linux kernel directly (no disk: the guest panics looking
for its root fs and stays halted, which is enough here) with a file serial
console and a virtio-serial unix channel, checks the live XML, hot-plugs and
unplugs a second channel, destroys and undefines the domain, stops the daemon
and checks (by PID) that none of its processes is left.  It prints timings and
exits non-zero on the first failure.

The kernel is $GAGENT_TEST_KERNEL, --kernel, a readable /boot/vmlinuz-*, or
else Debian's linux-image-amd64 fetched with ``apt-get download`` and unpacked
with ``dpkg-deb -x`` into the temporary directory (nothing is installed).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import libvirt
from daemon import _alive, _start_time, running_libvirtd

CHANNEL = "org.gagent.agent.0"
HOTPLUG_CHANNEL = "org.gagent.agent.1"


def find_kernel(tmp: Path, explicit: str | None) -> Path:
    for cand in (explicit, os.environ.get("GAGENT_TEST_KERNEL")):
        if cand:
            return Path(cand)
    for cand in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        if os.access(cand, os.R_OK):
            return Path(cand)
    # No kernel on the host: fetch Debian's, unpack it, install nothing.
    dl = tmp / "kernel-deb"
    dl.mkdir()
    dep = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], check=True, capture_output=True, text=True
    ).stdout
    names = [
        w.split(":", 1)[1].strip()
        for w in dep.splitlines()
        if w.strip().startswith("Depends:") and "linux-image-" in w
    ]
    if not names:
        raise SystemExit("cannot resolve linux-image-amd64 (run apt-get update?)")
    subprocess.run(
        ["apt-get", "download", "-o", "APT::Sandbox::User=root", names[0]],
        cwd=dl,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deb = next(dl.glob("*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dl / "root")], check=True)
    return next((dl / "root/boot").glob("vmlinuz-*"))


def domain_xml(name: str, kernel: Path, console_log: Path, channel_sock: Path) -> str:
    return f"""
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <cmdline>console=ttyS0 panic=0 loglevel=6</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial' index='0'/>
    <serial type='file'>
      <source path='{console_log}'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='{console_log}'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='{channel_sock}'/>
      <target type='virtio' name='{CHANNEL}'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def channel_xml(sock: Path, name: str) -> str:
    return (
        f"<channel type='unix'><source mode='bind' path='{sock}'/>"
        f"<target type='virtio' name='{name}'/></channel>"
    )


def live_channels(dom: libvirt.virDomain) -> dict[str, dict[str, str]]:
    root = ET.fromstring(dom.XMLDesc(0))
    out = {}
    for ch in root.findall("./devices/channel"):
        tgt = ch.find("target")
        src = ch.find("source")
        alias = ch.find("alias")
        out[tgt.get("name")] = {
            "path": src.get("path") if src is not None else "",
            "state": tgt.get("state", "(none)"),
            "alias": alias.get("name") if alias is not None else "",
        }
    return out


def check(cond: bool, what: str) -> None:
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        raise SystemExit(1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel")
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lvsmoke-"))
    timings: dict[str, float] = {}
    own_pids: dict[int, int | None] = {}
    try:
        kernel = find_kernel(tmp, args.kernel)
        print(f"kernel: {kernel}")
        console_log = tmp / "console.log"
        ch_sock = tmp / "ch.sock"
        ch2_sock = tmp / "ch2.sock"

        t = time.monotonic()
        with running_libvirtd(tmp / "lv") as d:
            timings["daemon start (spawn->socket)"] = d.timings["socket"]
            timings["daemon ready (spawn->virsh version ok)"] = d.timings["ready"]
            timings["running_libvirtd() enter"] = time.monotonic() - t
            print(f"uri: {d.uri}\nlibvirtd pid {d.pid}, supervisor {d.supervisor_pid}")
            for pid, _ in d.processes():
                own_pids[pid] = _start_time(pid)

            t = time.monotonic()
            conn = libvirt.open(d.uri)
            timings["libvirt.open()"] = time.monotonic() - t
            t = time.monotonic()
            caps = conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
            timings["getDomainCapabilities(qemu)"] = time.monotonic() - t
            check("<domain>qemu</domain>" in caps, "domain capabilities for TCG")

            t = time.monotonic()
            dom = conn.defineXML(domain_xml("gagent-smoke", kernel, console_log, ch_sock))
            timings["defineXML"] = time.monotonic() - t
            t = time.monotonic()
            dom.create()
            timings["domain start (create)"] = time.monotonic() - t
            check(dom.isActive() == 1, "domain is running")
            for pid, _comm in d.processes():
                own_pids.setdefault(pid, _start_time(pid))
            qemu = [(p, c) for p, c in d.processes() if c.startswith("qemu-system")]
            print(f"processes of the daemon: {d.processes()}")
            check(len(qemu) == 1, "one QEMU process under the daemon")
            ours = (d.supervisor_pid, d.init_pid, d.pid)
            others = [
                c for p, c in d.processes() if p not in ours and not c.startswith("qemu-system")
            ]
            check(not others, f"no virtlogd/virtlockd/other helpers ({others})")
            qemu_argv = Path(f"/proc/{qemu[0][0]}/cmdline").read_bytes().split(b"\0")
            check(b"-accel" in qemu_argv and b"tcg" in qemu_argv, "QEMU runs with -accel tcg")
            check(b"kvm" not in b" ".join(qemu_argv), "no kvm on the QEMU command line")

            chans = live_channels(dom)
            print(f"live channels: {chans}")
            check(
                CHANNEL in chans and chans[CHANNEL]["path"] == str(ch_sock),
                "live XML shows the channel",
            )
            print(f"channel state attribute: {chans[CHANNEL]['state']}")
            check(ch_sock.is_socket(), "channel socket exists on the host side")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(ch_sock))
            check(True, "host side can connect to the channel socket")

            t = time.monotonic()
            dom.attachDeviceFlags(
                channel_xml(ch2_sock, HOTPLUG_CHANNEL), libvirt.VIR_DOMAIN_AFFECT_LIVE
            )
            timings["attach channel"] = time.monotonic() - t
            chans = live_channels(dom)
            check(HOTPLUG_CHANNEL in chans, "hot-plugged channel in live XML")
            # libvirt adds state= to a hot-plugged channel only once QEMU
            # reports a VSERPORT_CHANGE event: none here (the guest has no
            # virtio_console driver loaded), so it may well stay absent.
            time.sleep(1)
            print(f"hot-plugged channel after 1 s: {live_channels(dom)[HOTPLUG_CHANNEL]}")
            check(ch2_sock.is_socket(), "hot-plugged channel socket exists")
            inactive = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            check(
                all(
                    c.find("target").get("name") != HOTPLUG_CHANNEL
                    for c in inactive.findall("./devices/channel")
                ),
                "hot-plug did not touch the persistent definition",
            )

            t = time.monotonic()
            dom.detachDeviceFlags(
                channel_xml(ch2_sock, HOTPLUG_CHANNEL), libvirt.VIR_DOMAIN_AFFECT_LIVE
            )
            while HOTPLUG_CHANNEL in live_channels(dom) and time.monotonic() - t < 10:
                time.sleep(0.05)
            timings["detach channel (until gone from live XML)"] = time.monotonic() - t
            check(HOTPLUG_CHANNEL not in live_channels(dom), "channel detached")

            # Let the guest print something, to show it really booted.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = console_log.read_text(errors="replace") if console_log.exists() else ""
                if "Linux version" in text:
                    break
                time.sleep(0.2)
            check("Linux version" in text, "guest kernel wrote to the file console")
            dom_log = d.domain_log_dir / "gagent-smoke.log"
            check(dom_log.exists(), f"domain log in the workdir ({dom_log})")

            t = time.monotonic()
            dom.destroy()
            timings["domain destroy"] = time.monotonic() - t
            check(not _alive(qemu[0][0]), "QEMU process gone after destroy")
            dom.undefine()
            check(not conn.listAllDomains(0), "no domains left")
            conn.close()

            # A second, transient domain left running on purpose: stopping the
            # daemon must kill it too.
            dom2 = libvirt.open(d.uri)
            t = time.monotonic()
            dom2.createXML(
                domain_xml("gagent-smoke-2", kernel, tmp / "console2.log", tmp / "ch3.sock"), 0
            )
            timings["transient domain start (createXML)"] = time.monotonic() - t
            dom2.close()
            for pid, _ in d.processes():
                own_pids.setdefault(pid, _start_time(pid))
            t_stop = time.monotonic()
        timings["daemon stop (with a running domain)"] = time.monotonic() - t_stop

        left = [p for p, st in own_pids.items() if _alive(p, st)]
        print(f"checked PIDs: {sorted(own_pids)}")
        check(not left, f"no process of ours left ({left})")
        check(not (tmp / "lv/daemon.pid").exists(), "pidfile removed")
    finally:
        print("\ntimings (s):")
        for k, v in timings.items():
            print(f"  {k:45s} {v:7.3f}")
        if args.keep_workdir:
            print(f"workdir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("SMOKE OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

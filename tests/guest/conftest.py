"""A fake guest (sysfs, /dev, /proc, /etc, lib dirs) in a temp dir, for gagent.guest.

``FakeGuest`` lays out the files the helper reads; ``FakeIO`` stands for the
device nodes: a node file holding ``chr MAJ:MIN`` is a character device, and
opening a port gives one end of a socketpair whose peer is kept open (host
connected: POLLOUT) or closed (host disconnected: POLLHUP), or raises the
errno the test chose.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from gagent.guest.roots import PortIO, Roots

DEFAULT_QGA_ARGV = ["/usr/sbin/qemu-ga", "-m", "virtio-serial", "-p"]


class FakeIO(PortIO):
    def __init__(self, guest: FakeGuest):
        self.guest = guest
        self.opened: list[str] = []
        self._peers: list[socket.socket] = []

    def _guest_path(self, path: Path) -> str:
        return "/" + str(Path(path).relative_to(self.guest.root))

    def open(self, path: Path) -> int:
        guest_path = self._guest_path(path)
        self.opened.append(guest_path)
        how = self.guest.open_behaviour.get(guest_path, "disconnected")
        if isinstance(how, int):
            raise OSError(how, os.strerror(how))
        mine, peer = socket.socketpair()
        fd = mine.detach()
        if how == "connected":
            self._peers.append(peer)
        else:
            peer.close()
        return fd

    def device_number(self, path: Path) -> tuple[int, int] | None:
        text = Path(path).read_text()  # raises FileNotFoundError like os.stat
        if not text.startswith("chr "):
            return None
        major, minor = text.split()[1].split(":")
        return int(major), int(minor)

    def close(self) -> None:
        for peer in self._peers:
            peer.close()


class FakeGuest:
    def __init__(self, root: Path):
        self.root = root
        self.roots = Roots.under(root)
        self.io = FakeIO(self)
        self.open_behaviour: dict[str, object] = {}

    def write(self, guest_path: str, text: str = "") -> Path:
        path = self.root / guest_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def symlink(self, guest_path: str, target: str) -> None:
        path = self.root / guest_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def kernel(
        self,
        *,
        bus: bool = True,
        driver: bool = True,
        module: str = "loaded",
        devices: tuple[tuple[str, str, str | None], ...] = (
            ("virtio0", "0x0003", "virtio_console"),
        ),
        pci_serial: bool = False,
        hypervisor: bool = False,  # the CPU flag a VM's kernel sees
        release: str = "6.1.0-test",
    ) -> FakeGuest:
        self.write("/proc/sys/kernel/osrelease", release + "\n")
        flags = "fpu vme sse2" + (" hypervisor" if hypervisor else "")
        self.write("/proc/cpuinfo", f"processor\t: 0\nflags\t\t: {flags}\n")
        mods = "virtio_console 45056 0 - Live 0x0\n" if module == "loaded" else "ext4 1 0\n"
        self.write("/proc/modules", mods)
        moddir = f"/lib/modules/{release}"
        if module == "available":
            self.write(f"{moddir}/modules.dep", "kernel/drivers/char/virtio_console.ko.xz:\n")
        elif module == "absent":
            self.write(f"{moddir}/modules.dep", "kernel/fs/ext4/ext4.ko.xz:\n")
        if pci_serial:
            self.write("/sys/bus/pci/devices/0000:00:05.0/vendor", "0x1af4\n")
            self.write("/sys/bus/pci/devices/0000:00:05.0/device", "0x1003\n")
        if not bus:
            return self
        (self.root / "sys/bus/virtio/devices").mkdir(parents=True, exist_ok=True)
        if driver:
            (self.root / "sys/bus/virtio/drivers/virtio_console").mkdir(parents=True)
        for name, device_id, bound in devices:
            self.write(f"/sys/bus/virtio/devices/{name}/device", device_id + "\n")
            if bound:
                self.symlink(f"/sys/bus/virtio/devices/{name}/driver", f"../../drivers/{bound}")
        return self

    def port(
        self,
        vport: str,
        name: str,
        *,
        devnum: tuple[int, int] = (250, 1),
        node: str | None = "chr",  # "chr", "file" (not a device), "wrong" number, None
        link: str | None = "ok",  # "ok", "wrong", None
        host: str = "disconnected",  # what opening it gives: connected/disconnected/errno
        debugfs: bool | None = None,  # host_connected as debugfs says
    ) -> FakeGuest:
        base = f"/sys/class/virtio-ports/{vport}"
        self.write(f"{base}/name", name + "\n")
        self.write(f"{base}/dev", f"{devnum[0]}:{devnum[1]}\n")
        if node == "chr":
            self.write(f"/dev/{vport}", f"chr {devnum[0]}:{devnum[1]}")
        elif node == "wrong":
            self.write(f"/dev/{vport}", f"chr {devnum[0]}:{devnum[1] + 100}")
        elif node == "file":
            self.write(f"/dev/{vport}", "plain file")
        if name and link == "ok":
            self.symlink(f"/dev/virtio-ports/{name}", f"../{vport}")
        elif name and link == "wrong":
            self.symlink(f"/dev/virtio-ports/{name}", "../vport9p9")
        if debugfs is not None:
            self.write(
                f"/sys/kernel/debug/virtio-ports/{vport}",
                f"name: {name}\nguest_connected: 1\nhost_connected: {int(debugfs)}\n"
                "outvq_full: 0\nis_console: no\n",
            )
        self.open_behaviour[f"/dev/{vport}"] = host
        return self

    def process(
        self,
        pid: int,
        argv: list[str],
        *,
        comm: str | None = None,
        fds: list[str] | None = (),  # None: unreadable (another user's process)
        environ: dict[str, str] | None = None,
        exe: str | None = None,  # /proc/PID/exe's target (unreadable when None)
    ) -> FakeGuest:
        base = f"/proc/{pid}"
        if exe:
            self.symlink(f"{base}/exe", exe)
        self.write(f"{base}/comm", (comm or os.path.basename(argv[0]))[:15] + "\n")
        self.write(f"{base}/cmdline", "\0".join(argv) + "\0")
        if environ:
            self.write(f"{base}/environ", "".join(f"{k}={v}\0" for k, v in environ.items()))
        if fds is not None:
            (self.root / base.lstrip("/") / "fd").mkdir(parents=True, exist_ok=True)
            for i, target in enumerate(["/dev/null", *fds]):
                self.symlink(f"{base}/fd/{i}", target)
        return self

    def qga(self, pid: int, path: str, *, hold: str | None = None, **kw) -> FakeGuest:
        """A qemu-ga on ``path`` holding ``hold`` (a node such as /dev/vport1p1)."""
        return self.process(
            pid, [*DEFAULT_QGA_ARGV, path], fds=[hold] if hold else [], comm="qemu-ga", **kw
        )

    def char_device(self, devnum: tuple[int, int], sysfs_dir: str, subsystem: str) -> FakeGuest:
        """sysfs's entry for a character device: /sys/dev/char/MAJ:MIN -> ``sysfs_dir``.

        The node itself is left to the test: a FakeIO ``chr`` file, or a symlink
        to a real device with that number for the real PortIO.
        """
        self.write(f"{sysfs_dir}/dev", f"{devnum[0]}:{devnum[1]}\n")
        self.symlink(f"{sysfs_dir}/subsystem", str(self.root / "sys/class" / subsystem))
        self.symlink(
            f"/sys/dev/char/{devnum[0]}:{devnum[1]}", str(self.root / sysfs_dir.lstrip("/"))
        )
        return self

    def healthy(self) -> FakeGuest:
        """A guest whose org.gagent.agent.0 is served by qemu-ga (an agent port + a free one)."""
        self.kernel()
        self.port("vport1p1", "org.gagent.agent.0", devnum=(250, 1))
        self.port("vport1p2", "org.gagent.probe.0", devnum=(250, 2))
        self.qga(300, "/dev/virtio-ports/org.gagent.agent.0", hold="/dev/vport1p1")
        return self


@pytest.fixture
def guest(tmp_path):
    g = FakeGuest(tmp_path / "guest")
    g.root.mkdir()
    (g.root / "proc").mkdir()
    yield g
    g.io.close()


__all__ = ["FakeGuest", "FakeIO", "errno"]

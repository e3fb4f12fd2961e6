"""Finding a domain's channel socket from its QEMU process, on a /proc tree laid out as
libvirt 9 starts QEMU (JSON -device, fd-passed -chardev) and as older libvirt did (path=)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gagent.host.qemu_procs import find_channel_sockets, parse_qemu_argv

UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


def qemu_argv(name: str, uuid: str, *, fd: int | None = None, path: str | None = None):
    chardev = (
        f"socket,id=charchannel0,fd={fd},server=on,wait=off"
        if fd is not None
        else (f"socket,id=charchannel0,path={path},server=on,wait=off")
    )
    device = {
        "driver": "virtserialport",
        "bus": "virtio-serial0.0",
        "nr": 1,
        "chardev": "charchannel0",
        "id": "channel0",
        "name": "org.gagent.agent.0",
    }
    return ["/usr/bin/qemu-system-x86_64", "-name", f"guest={name},debug-threads=on",
            "-uuid", uuid, "-chardev", "socket,id=charmonitor,fd=33,server=on,wait=off",
            "-chardev", chardev, "-device", json.dumps(device)]  # fmt: skip


def make_proc(root: Path, pid: int, argv: list[str], fds: dict[int, int] | None = None) -> None:
    (root / str(pid) / "fd").mkdir(parents=True)
    (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    for fd, inode in (fds or {}).items():
        os.symlink(f"socket:[{inode}]", root / str(pid) / "fd" / str(fd))


def write_unix(root: Path, rows: dict[int, str]) -> None:
    (root / "net").mkdir(exist_ok=True)
    lines = ["Num       RefCount Protocol Flags    Type St Inode Path"]
    lines += [f"0000: 00000002 00000000 00010000 0001 01 {i} {p}" for i, p in rows.items()]
    (root / "net" / "unix").write_text("\n".join(lines) + "\n")


def test_parse_keyval_and_json_forms():
    parsed = parse_qemu_argv(qemu_argv("vm1", UUID, fd=31))
    assert (parsed.name, parsed.uuid) == ("vm1", UUID)
    assert parsed.ports == {"org.gagent.agent.0": "charchannel0"}
    assert parsed.chardev_fds == {"charmonitor": 33, "charchannel0": 31}
    old = parse_qemu_argv(
        [
            "qemu-kvm",
            "-name",
            "vm,,2",
            "-chardev",
            "socket,id=c0,path=/run/a,,b.sock,server=on",
            "-device",
            "virtserialport,chardev=c0,id=channel0,name=org.gagent.agent.0",
        ]
    )
    assert old.name == "vm,2" and old.chardev_paths == {"c0": "/run/a,b.sock"}


def test_fd_passed_socket_found_by_inode_and_matched_by_name_or_uuid(tmp_path):
    make_proc(tmp_path, 4242, qemu_argv("vm1", UUID, fd=31), {31: 777, 33: 778})
    make_proc(tmp_path, 4300, qemu_argv("vm2", "00000000-0000-0000-0000-000000000002", fd=31))
    make_proc(tmp_path, 5000, ["/bin/bash", "-c", "echo -name vm1"])
    write_unix(tmp_path, {777: "/run/libvirt/qemu/channel/1-vm1/org.gagent.agent.0", 778: "/m"})
    (found,) = find_channel_sockets("vm1", "org.gagent.agent.0", proc=tmp_path)
    assert (found.pid, found.uuid) == (4242, UUID)
    assert found.socket_path == "/run/libvirt/qemu/channel/1-vm1/org.gagent.agent.0"
    assert find_channel_sockets(UUID.upper(), "org.gagent.agent.0", proc=tmp_path) == [found]
    assert find_channel_sockets("vm1", "org.other.0", proc=tmp_path) == []


def test_two_guests_of_one_name_are_both_reported_never_guessed(tmp_path):
    make_proc(tmp_path, 10, qemu_argv("web", UUID, path="/a.sock"))
    make_proc(tmp_path, 11, qemu_argv("web", "00000000-0000-0000-0000-000000000001", path="/b"))
    found = find_channel_sockets("web", "org.gagent.agent.0", proc=tmp_path)
    assert sorted(c.socket_path for c in found) == ["/a.sock", "/b"]


def test_names_are_case_sensitive_like_libvirts(tmp_path):
    make_proc(tmp_path, 10, qemu_argv("vm1", UUID, path="/a.sock"))
    assert find_channel_sockets("VM1", "org.gagent.agent.0", proc=tmp_path) == []
    assert len(find_channel_sockets("vm1", "org.gagent.agent.0", proc=tmp_path)) == 1

"""Consistency records, the --consistency policy and the freeze preflight on a real guest.

Two short-lived busybox guests (``doomed_domain``: their disks and agents are ours to change):

* snapshots through every path, read back with ``snapshot list --json``: gagent's
  freeze (``filesystem``: the filesystems, the hook, the window, qemu-ga's
  version), ``--mountpoint`` (a mountpoint the guest lacks is refused before any
  freeze), libvirt's quiesce (``--libvirt-quiesce --no-metadata``: only gagent's
  store knows it; then by itself, once gagent's channel is removed and only
  libvirt's is left); then with both qemu-ga stopped: ``require`` takes no snapshot and
  leaves no overlay, ``prefer`` falls back to ``crash`` and says so, ``crash``
  needs no agent;
* ``gagent fsfreeze check`` with a loop device backed by a file on /data, a
  read-only bind mount of /data, and our qemu-ga restarted with
  ``--block-rpcs=guest-fsfreeze-freeze``.  The image has no loop module: the
  kernel package's ``loop.ko`` is copied in and loaded.

gagent runs as a subprocess, as an operator runs it; its records go to the
run's own state directory (tests/conftest.py sets GAGENT_STATE_DIR).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

GAGENT = str(Path(sys.executable).with_name("gagent"))
#: Bounds that only catch a hang (a busy 2-CPU host runs TCG guests slowly).
BOUND = 180.0
PORTS = "org.gagent.agent.0 org.qemu.guest_agent.0"
INIT_SCRIPT = "/etc/gagent/sysvinit/gagent-qga"


def gagent(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run([GAGENT, *argv], capture_output=True, text=True, timeout=BOUND)
    return proc.returncode, proc.stdout, proc.stderr


def guest_sh(domain, script: str) -> str:
    """Run ``script`` in the guest through libvirt's agent (ours may be down or blocked)."""
    code, out, err = gagent(
        "agent", domain.name, "-c", domain.uri, "--transport", "libvirt",
        "exec", "--", "/bin/sh", "-c", script,
    )  # fmt: skip
    assert code == 0, (script, code, out, err)
    return out


def create(domain, name: str, *options: str) -> tuple[int, dict | None, str]:
    code, out, err = gagent("snapshot", "create", domain.name, name, "-c", domain.uri, "--json",
                            *options)  # fmt: skip
    return code, (json.loads(out) if code == 0 else None), err


def listed(domain) -> dict[str, dict]:
    code, out, err = gagent("snapshot", "list", domain.name, "-c", domain.uri, "--json")
    assert code == 0, err
    return {entry["name"]: entry for entry in json.loads(out)}


def _files(domain) -> set[str]:
    return {p.name for p in domain.data_disk.parent.iterdir()}


def _until_channels(domain, state: str, ports: tuple[str, ...] = tuple(PORTS.split())) -> None:
    deadline = time.monotonic() + BOUND
    while any(domain.channel_states().get(p) != state for p in ports):
        assert time.monotonic() < deadline, domain.channel_states()
        time.sleep(0.2)


def test_records_for_each_path_and_the_policy(doomed_domain):
    domain = doomed_domain

    # gagent's own freeze: filesystem-consistent, with what it froze and how long
    code, result, err = create(domain, "fs")
    assert (code, err) == (0, ""), err
    record = result["record"]
    assert record["consistency"] == "filesystem" and record["policy"] == "require"
    assert record["filesystems"] == {"/data": "ext4"} and record["freeze_window_ms"] > 0
    assert record["qga_version"] and record["hooks"]["/etc/gagent/fsfreeze-hook"] is True
    assert record["deadman_deadline"] == 60
    [disk] = record["disks"]
    assert (disk["target"], disk["consistency"], disk["mountpoints"]) == (
        "vda",
        "filesystem",
        ["/data"],
    )

    # --mountpoint: one the guest lacks is named before anything freezes; /data is fine
    before = _files(domain)
    code, _, err = create(domain, "nope", "--mountpoint", "/data", "--mountpoint", "/nope")
    assert code == 2 and "has no filesystem mounted on /nope" in err and "/data" in err
    assert _files(domain) == before
    code, result, err = create(domain, "mp", "--mountpoint", "/data")
    assert (code, err) == (0, ""), err
    assert result["record"]["filesystems"] == {"/data": "ext4"}

    # libvirt's quiesce, no libvirt metadata: the record is gagent's alone
    code, result, err = create(domain, "lq", "--libvirt-quiesce", "--no-metadata")
    assert (code, err) == (0, ""), err
    assert result["record"]["consistency"] == "libvirt-quiesce"
    assert result["record"]["freeze_window_ms"] is None

    # only libvirt's channel left: the domain's snapshots take libvirt's quiesce by themselves
    code, _, err = gagent("channel", "remove", domain.name, "-c", domain.uri)
    assert code == 0, err
    code, result, err = create(domain, "only-libvirt")
    assert (code, err) == (0, ""), err
    assert result["method"] == "libvirt-quiesce"
    assert result["record"]["consistency"] == "libvirt-quiesce" and result["record"]["qga_version"]

    # every agent stopped (detached: the exec's own agent goes down with it)
    guest_sh(domain, f"setsid sh -c 'sleep 1; GAGENT_PORTS=\"{PORTS}\" {INIT_SCRIPT} stop' "
                     ">/dev/null 2>&1 </dev/null &")  # fmt: skip
    _until_channels(domain, "disconnected", ports=("org.qemu.guest_agent.0",))
    before, snapshots = _files(domain), domain.dom.snapshotNum()
    code, _, err = create(domain, "req")
    assert code == 3, err  # no agent: require takes nothing
    assert _files(domain) == before and domain.dom.snapshotNum() == snapshots
    code, result, err = create(domain, "pref", "--consistency", "prefer")
    assert code == 0, err
    assert err.startswith("gagent: warning: could not freeze ") and "(--consistency prefer)" in err
    assert result["record"]["consistency"] == "crash" and result["record"]["fallback"]
    code, result, err = create(domain, "crash", "--consistency", "crash")
    assert (code, err) == (0, ""), err
    assert result["record"]["consistency"] == "crash" and result["record"]["fallback"] is None

    # all of it, read back
    found = listed(domain)
    assert sorted(found) == ["crash", "fs", "lq", "mp", "only-libvirt", "pref"]
    assert found["fs"]["consistency"].startswith("filesystem ")
    assert found["lq"]["state"] == "no-metadata" and found["lq"]["consistency"] == "libvirt-quiesce"
    assert found["pref"]["consistency"] == "crash (fallback)"
    assert found["crash"]["record"]["policy"] == "crash"
    code, out, _ = gagent("snapshot", "list", domain.name, "-c", domain.uri)
    assert code == 0 and "consistency" in out.splitlines()[0]
    # a snapshot deleted (libvirt merges the newest overlay back) takes its record along
    code, _, err = gagent("snapshot", "delete", domain.name, "crash", "-c", domain.uri)
    assert code == 0, err
    assert "crash" not in listed(domain)


@pytest.fixture
def loop_module(guest_image, guest_kernel_release, tmp_path) -> Path:
    """loop.ko of the guest's kernel, from the kernel package the image was built from."""
    debs = sorted((Path(guest_image.kernel).parent.parent / "debs").glob(
        f"linux-image-{guest_kernel_release}_*.deb"))  # fmt: skip
    if not debs:
        pytest.skip(f"no kernel package for {guest_kernel_release} in the image cache")
    member = f"./lib/modules/{guest_kernel_release}/kernel/drivers/block/loop.ko"
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], capture_output=True,
                         timeout=BOUND, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tmp_path), member], input=tar, timeout=BOUND, check=True)
    return tmp_path / member


def test_preflight_findings(doomed_domain, loop_module, tmp_path):
    domain = doomed_domain
    image = tmp_path / "loop.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", str(image), "1024"],
                   timeout=BOUND, check=True)  # fmt: skip
    for local, remote in ((loop_module, "/tmp/loop.ko"), (image, "/data/loop.img")):
        code, _, err = gagent("agent", domain.name, "-c", domain.uri, "copy-to", str(local), remote)
        assert code == 0, err
    guest_sh(
        domain,
        "insmod /tmp/loop.ko && mkdir -p /mnt/loop /mnt/ro"
        " && mount -o loop /data/loop.img /mnt/loop"
        " && mount -o bind /data /mnt/ro && mount -o remount,ro,bind /mnt/ro"
        f" && GAGENT_PORTS=org.gagent.agent.0 GAGENT_QGA_ARGS='--fsfreeze-hook="
        f"/etc/gagent/fsfreeze-hook --block-rpcs=guest-fsfreeze-freeze' {INIT_SCRIPT} restart",
    )
    _until_channels(domain, "connected")  # our restarted qemu-ga is back on its port
    code, out, err = gagent(
        "fsfreeze", "check", domain.name, "-c", domain.uri, "--json", "--transport", "socket"
    )
    assert code == 10, (out, err)  # EXIT_CODES: a check failed
    report = json.loads(out)
    by_code = {}
    for finding in report["findings"]:
        by_code.setdefault(finding["code"], []).append(finding)
    [blocked] = by_code["command-disabled"]
    assert blocked["severity"] == "error" and "guest-fsfreeze-freeze" in blocked["message"]
    assert "--block-rpcs" in blocked["fix"]
    [loop] = by_code["loop-device"]
    assert "/mnt/loop" in loop["message"] and "backed by /data/loop.img on /data" in loop["message"]
    assert loop["severity"] == "warning"  # mounted after /data: it freezes first
    [readonly] = by_code["read-only"]
    assert "/mnt/ro" in readonly["message"]
    assert "/data" in by_code["mounted-twice"][0]["message"]
    assert by_code["deadman"][0]["message"].endswith("after 60 s frozen")
    assert "/etc/gagent/fsfreeze-hook" in by_code["hooks"][0]["message"]
    assert by_code["selinux"][0]["message"] == "SELinux disabled"
    # the same preflight inside 'fsfreeze freeze': the blocked freeze is refused, nothing frozen
    code, _, err = gagent(
        "fsfreeze", "freeze", domain.name, "-c", domain.uri, "--transport", "socket"
    )
    assert code == 5 and "guest-fsfreeze-freeze" in err, err

"""``gagent channel``, ``status``, ``watch``, ``demo`` and ``--version`` in-process,
against libvirt's test driver (test:///default; every test makes its own domains
and holds a connection so the shared state lives between commands)."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import libvirt
import pytest
from libvirt_domains import set_manager_metadata, xmls

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL, find_channel, list_channels
from gagent.host.cli import main

URI = "test:///default"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("gagent: error: "), lines[0]
    return lines[0]


def unix_channel(name: str, path: str) -> str:
    return (
        f"    <channel type='unix'>\n      <source mode='bind' path='{path}'/>\n"
        f"      <target type='virtio' name='{name}'/>\n    </channel>\n"
    )


# --------------------------------------------------------------------- channel


def test_channel_add_dry_run_prints_diff_and_changes_nothing(capsys, conn, make_domain):
    name = make_domain()
    before = xmls(conn, name)
    code, out, err = run(capsys, "channel", "add", name, "-c", URI, "--dry-run")
    assert (code, err) == (0, "")
    assert xmls(conn, name) == before
    assert out.startswith("--- current\n+++ proposed\n@@ ")
    assert f"+      <target type='virtio' name='{GAGENT_CHANNEL}'/>\n" in out
    assert "+    <controller type='virtio-serial' index='0'/>\n" in out
    assert (
        f"dry run, nothing changed: would add channel {GAGENT_CHANNEL} "
        "(unix socket chosen by libvirt)"
    ) in out
    assert "would hot-plug into the running domain:" in out


def test_channel_add_list_remove_on_inactive_domain(capsys, conn, make_domain, tmp_path):
    name = make_domain(start=False)
    path = str(tmp_path / "agent.sock")

    code, out, err = run(capsys, "channel", "add", name, "-c", URI, "--path", path)
    assert (code, err) == (0, "")
    assert out == (
        f"added channel {GAGENT_CHANNEL} (unix socket {path}) and a virtio-serial controller "
        "(index 0)\n"
    )

    code, out, _ = run(capsys, "channel", "list", name, "-c", URI, "--json")
    assert code == 0
    assert json.loads(out) == [
        {"name": GAGENT_CHANNEL, "kind": "unix", "target_type": "virtio", "path": path,
         "mode": "bind", "state": None}
    ]  # fmt: skip

    code, out, _ = run(capsys, "channel", "list", name, "-c", URI)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["name", "type", "target", "path", "state"]
    assert row.split() == [GAGENT_CHANNEL, "unix", "virtio", path, "-"]

    before = xmls(conn, name)
    code, out, _ = run(capsys, "channel", "remove", name, "-c", URI, "--dry-run")
    assert code == 0 and xmls(conn, name) == before
    assert f"-      <source mode='bind' path='{path}'/>\n" in out
    assert out.endswith(f"dry run, nothing changed: would remove channel {GAGENT_CHANNEL}\n")

    assert run(capsys, "channel", "remove", name, "-c", URI) == (
        0, f"removed channel {GAGENT_CHANNEL}\n", "",
    )  # fmt: skip
    assert list_channels(xmls(conn, name)[1]) == []
    assert run(capsys, "channel", "list", name, "-c", URI) == (0, "(no channels)\n", "")
    assert run(capsys, "channel", "remove", name, "-c", URI) == (
        0, f"no channel {GAGENT_CHANNEL} to remove in the definition\n", "",
    )  # fmt: skip


def test_channel_add_to_running_domain_says_next_boot(capsys, conn, make_domain):
    name = make_domain()
    code, out, err = run(capsys, "channel", "add", name, "-c", URI)
    assert (code, err) == (0, "")
    assert out.rstrip().endswith("takes effect at the next boot")
    assert "hot-plug refused" in out
    assert [c.name for c in list_channels(xmls(conn, name)[1])] == [GAGENT_CHANNEL]
    # again: already there
    code, out, _ = run(capsys, "channel", "add", name, "-c", URI)
    assert code == 0
    assert out.startswith(f"channel {GAGENT_CHANNEL} is already present in the definition\n")


def test_channel_add_no_live(capsys, conn, make_domain):
    name = make_domain()
    code, out, _ = run(capsys, "channel", "add", name, "-c", URI, "--no-live")
    assert code == 0
    assert "not hot-plugged (--no-live): takes effect at the next boot" in out


def test_channel_add_libvirt_channel_needs_flag(capsys, conn, make_domain):
    name = make_domain(start=False)
    before = xmls(conn, name)
    code, out, err = run(capsys, "channel", "add", name, "-c", URI, "--name", LIBVIRT_AGENT_CHANNEL)
    assert (code, out) == (2, "")
    assert "--libvirt-managed" in error_line(err)
    assert xmls(conn, name) == before
    code, out, _ = run(
        capsys, "channel", "add", name, "-c", URI, "--name", LIBVIRT_AGENT_CHANNEL,
        "--libvirt-managed",
    )  # fmt: skip
    assert code == 0
    assert "reach it with --transport libvirt" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--path", "relative.sock"], "must be an absolute path"),
     (["--name", "bad name"], "invalid channel name"),
     (["--path", "/nonexistent-gagent-dir/a.sock"], "does not exist")],
)  # fmt: skip
def test_channel_add_bad_arguments_exit_2(capsys, conn, make_domain, extra, message):
    name = make_domain(start=False)
    before = xmls(conn, name)
    code, out, err = run(capsys, "channel", "add", name, "-c", URI, *extra)
    assert (code, out) == (2, "")
    assert message in error_line(err)
    assert xmls(conn, name) == before


def test_channel_add_to_transient_domain_exit_8_nothing_changed(capsys, conn, make_domain):
    name = make_domain(persistent=False)
    before = xmls(conn, name)
    code, out, err = run(capsys, "channel", "add", name, "-c", URI)
    assert (code, out) == (8, "")
    assert "not supported" in error_line(err)
    assert xmls(conn, name) == before
    assert not conn.lookupByName(name).isPersistent()


def test_channel_add_to_a_nova_domain_is_refused_unless_forced(capsys, conn, make_domain):
    name = make_domain()
    set_manager_metadata(conn, name, "OpenStack nova")
    before = xmls(conn, name)
    code, out, err = run(capsys, "channel", "add", name, "-c", URI)
    assert (code, out) == (2, "")
    line = error_line(err)
    assert f"domain {name} is managed by OpenStack nova" in line
    assert "hw_qemu_guest_agent=yes" in line
    assert line.endswith(f"--name {GAGENT_CHANNEL} --force")
    assert xmls(conn, name) == before
    # reading works as everywhere
    assert run(capsys, "channel", "list", name, "-c", URI) == (0, "(no channels)\n", "")
    code, out, err = run(capsys, "channel", "add", name, "-c", URI, "--force")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith(f"warning: OpenStack nova manages {name}")
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL) is not None


def test_channel_add_and_remove_json(capsys, conn, make_domain):
    name = make_domain(start=False)
    code, out, err = run(capsys, "channel", "add", name, "-c", URI, "--json")
    assert (code, err) == (0, "")
    added = json.loads(out)
    assert (added["domain"], added["changed"], added["live"]) == (name, True, False)
    assert added["messages"][0].startswith(f"added channel {GAGENT_CHANNEL}")
    code, out, err = run(capsys, "--json", "channel", "remove", name, "-c", URI)
    assert (code, err) == (0, "")
    removed = json.loads(out)
    assert (removed["changed"], removed["diff"].startswith("--- current")) == (True, True)
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL) is None


@pytest.mark.parametrize("sub", ["add", "remove", "list"])
def test_channel_unknown_domain_exit_8(capsys, sub):
    code, out, err = run(capsys, "channel", sub, "gagent-no-such-domain", "-c", URI)
    assert (code, out) == (8, "")
    assert "no domain 'gagent-no-such-domain'" in error_line(err)


def test_channel_list_uri_from_environment(capsys, monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", URI)
    assert run(capsys, "channel", "list", "test") == (0, "(no channels)\n", "")


# ---------------------------------------------------------------------- status


def test_status_domain_without_channel_exit_3(capsys):
    code, out, err = run(capsys, "status", "test", "-c", URI)
    assert (code, err) == (3, "")
    assert out.startswith("test: running, agent unreachable: domain test has no agent channel")
    assert out.rstrip().endswith("(add one: gagent channel add test -c test:///default)")
    code, out, _ = run(capsys, "status", "test", "-c", URI, "--json")
    report = json.loads(out)
    assert code == 3
    assert (report["domain"], report["state"], report["agent"]) == ("test", "running", None)
    assert "gagent channel add test" in report["reason"]


def test_status_shut_off_exit_3(capsys, make_domain):
    name = make_domain(start=False)
    code, out, _ = run(capsys, "status", name, "-c", URI)
    assert code == 3
    assert out.startswith(f"{name}: shut off, agent unreachable: domain {name} is shut off")


def test_status_unknown_domain_exit_8(capsys):
    code, out, err = run(capsys, "status", "gagent-no-such-domain", "-c", URI)
    assert (code, out) == (8, "")
    error_line(err)


def test_status_agent_answering_exit_0(capsys, qemu_ga, make_domain):
    path = str(qemu_ga.socket_path)
    name = make_domain(unix_channel(GAGENT_CHANNEL, path))
    code, out, err = run(capsys, "status", name, "-c", URI)
    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf"{name}: running, agent answering \(domain {name} via {re.escape(path)}, "
        r"[\d.]+ ms\)\n",
        out,
    )
    code, out, _ = run(capsys, "status", name, "-c", URI, "--json")
    report = json.loads(out)
    assert code == 0 and report["agent"] == f"domain {name} via {path}"
    assert report["ping_ms"] >= 0


def test_status_silent_agent_times_out_exit_3(capsys, make_domain, tmp_path):
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(4)  # never accepts, never answers
        name = make_domain(unix_channel(GAGENT_CHANNEL, str(path)))
        code, out, _ = run(capsys, "status", name, "-c", URI, "--timeout", "0.3", "--json")
    assert code == 3
    assert json.loads(out)["reason"] == "no answer within 0.3s"


def test_status_timeout_zero_is_not_unreachable(capsys, qemu_ga, make_domain):
    name = make_domain(unix_channel(GAGENT_CHANNEL, str(qemu_ga.socket_path)))
    code, _out, _err = run(capsys, "status", name, "-c", URI, "--timeout", "0")
    assert code in (0, 2)


# ----------------------------------------------------------------------- watch


def test_watch_for_a_while(capsys):
    code, _out, err = run(capsys, "watch", "-c", URI, "--for", "0.5", "--interval", "0.1")
    assert code == 0
    assert err == f"watching all domains on {URI}\n"


@pytest.mark.parametrize("as_json", [False, True])
def test_watch_one_domain_prints_its_events(capsys, make_domain, as_json):
    """'watch' runs trio in this thread: another thread pauses and resumes the domain
    (through its own connection) until the command's time is up; --json: one object a line."""
    name, other = make_domain(), make_domain()
    stop = threading.Event()

    def toggle() -> None:
        c = libvirt.open(URI)
        try:
            doms = [c.lookupByName(name), c.lookupByName(other)]
            while not stop.wait(0.05):
                for dom in doms:
                    dom.suspend()
                    dom.resume()
        finally:
            c.close()

    thread = threading.Thread(target=toggle, daemon=True)
    thread.start()
    try:
        code, out, err = run(capsys, "watch", name, "-c", URI, "--for", "1", *["--json"][:as_json])
    finally:
        stop.set()
        thread.join(5)
    assert code == 0
    assert err == f"watching {name} on {URI}\n"
    lines = out.splitlines()
    if as_json:
        events = [json.loads(line) for line in lines]
        assert {(e["domain"], e["subject"], e["new"]) for e in events} == {
            (name, "lifecycle", "suspended"), (name, "lifecycle", "resumed"),
        }  # fmt: skip
        return
    assert any(re.fullmatch(rf"\d\d:\d\d:\d\d {name} lifecycle: suspended", x) for x in lines)
    assert any(line.endswith(f" {name} lifecycle: resumed") for line in lines)
    assert not any(other in line for line in lines)


def test_watch_unknown_domain_exit_8(capsys):
    code, _, err = run(capsys, "watch", "gagent-no-such-domain", "-c", URI, "--for", "5")
    assert code == 8
    assert "no domain 'gagent-no-such-domain'" in err.splitlines()[-1]


# ------------------------------------------------------------ demo and version


def test_demo(capsys):
    code, out, err = run(capsys, "demo")
    assert (code, err) == (0, "")
    first = out.splitlines()[0]
    match = re.match(r"started qemu-ga pid (\d+) on (\S+) \((\d+) RPCs blocked", first)
    assert match, first
    assert re.search(r"^agent:      qemu-ga \d+\.\d+\.\d+\S*, ping [\d.]+ ms$", out, re.M)
    assert f"hostname:   {socket.gethostname()}\n" in out
    pid, socket_path = int(match.group(1)), match.group(2)
    assert not os.path.exists(socket_path)  # its temporary directory is gone
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert re.fullmatch(r"gagent, version \d+\.\d+\.\d+\S*\n", out)


@pytest.fixture
def silent_libvirtd(silent_unix_socket):
    """A libvirt URI whose socket accepts the connection and never answers (a hung libvirtd)."""
    return f"qemu+unix:///system?socket={silent_unix_socket}"


@pytest.mark.parametrize(
    "argv",
    [("watch", "--for", "30"), ("channel", "probe", "vm1", "--wait", "30"),
     ("channel", "list", "vm1"), ("status", "vm1")],
    ids=["watch", "channel-probe", "channel-list", "status"],
)  # fmt: skip
def test_a_hung_libvirtd_cannot_outlive_timeout(capsys, silent_libvirtd, argv):
    started = time.monotonic()
    code, out, err = run(capsys, *argv, "-c", silent_libvirtd, "--timeout", "1")
    took = time.monotonic() - started
    assert (code, out) == (4, ""), err
    (line,) = err.splitlines()
    assert line.startswith("gagent: error: timed out after 1s waiting for "), line
    assert took < 1 + 10  # the deadline plus a busy machine's margin

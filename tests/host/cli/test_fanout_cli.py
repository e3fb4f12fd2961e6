"""``gagent agent --domains/--all`` and ``gagent status --domains/--all``, against libvirt's
test driver with a node file whose domains' channel sockets are real local qemu-ga processes,
a dead socket, a hung agent (accepts, never answers) and a stopped domain."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from gagent.host.cli import main
from gagent.localagent import start_local_qemu_ga

pytestmark = pytest.mark.qemu_ga

RUNNING = ["good1", "good2", "dead", "hung"]


def _domain(name: str, socket_path: Path, *, shut_off: bool = False) -> str:
    runstate = "<test:runstate>5</test:runstate>" if shut_off else ""  # VIR_DOMAIN_SHUTOFF
    return (
        "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
        f"<name>{name}</name><memory unit='KiB'>65536</memory><os><type>hvm</type></os>"
        f"<devices><channel type='unix'><source mode='bind' path='{socket_path}'/>"
        "<target type='virtio' name='org.gagent.agent.0'/></channel></devices>"
        f"{runstate}</domain>"
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The URI of a test-driver node: two real agents, a dead socket, a hung agent, and a
    stopped domain."""
    workdir = tmp_path_factory.mktemp("fanout")
    agents = []
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for index in (1, 2):
            agents.append(start_local_qemu_ga(workdir, name=f"qga{index}"))
        hung.bind(str(workdir / "hung.sock"))
        hung.listen(16)
        domains = [
            _domain("good1", agents[0].socket_path),
            _domain("good2", agents[1].socket_path),
            _domain("dead", workdir / "nobody.sock"),
            _domain("hung", workdir / "hung.sock"),
            _domain("off", agents[0].socket_path, shut_off=True),
        ]
        path = workdir / "node.xml"
        path.write_text("<node>" + "".join(domains) + "</node>")
        yield f"test://{path}"
    finally:
        hung.close()
        for agent in agents:
            agent.stop()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> dict[str, dict]:
    lines = [json.loads(line) for line in out.splitlines()]
    by_domain = {line["domain"]: line for line in lines}
    assert len(by_domain) == len(lines), "one line per domain"
    for line in lines:
        assert set(line) - {"result", "error"} == {"domain", "ok", "exit", "ms"}
        assert ("result" in line) != ("error" in line), line  # one of them
        assert line["ok"] == (line["exit"] == 0 and "result" in line), line
    return by_domain


def test_all_reports_every_running_domain_and_exits_with_the_worst(capsys, node):
    code, out, err = run(capsys, "agent", "-c", node, "--all", "--json", "--timeout", "1", "ping")
    lines = json_lines(out)
    assert err == ""
    assert sorted(lines) == sorted(RUNNING)  # the stopped one is not running: not listed
    assert lines["good1"]["ok"] and lines["good1"]["result"] == {}
    assert (lines["good1"]["exit"], lines["good2"]["exit"]) == (0, 0)
    assert lines["dead"]["exit"] == 3 and "no agent socket at" in lines["dead"]["error"]
    assert lines["hung"]["exit"] == 4 and "timed out after 1s" in lines["hung"]["error"]
    assert code == 4


def test_a_hung_agent_delays_no_other_domain(capsys, node):
    code, out, _ = run(capsys, "agent", "-c", node, "--all", "--json", "--timeout", "5", "ping")
    order = [json.loads(line)["domain"] for line in out.splitlines()]
    lines = json_lines(out)
    # the hung domain ends last, at its own deadline (the 2 s a channel of unknown state
    # gets for its first sync: exit 3), the others long before it
    assert order[-1] == "hung" and lines["hung"]["exit"] == 3
    assert max(lines[name]["ms"] for name in ("good1", "good2", "dead")) < lines["hung"]["ms"]
    assert code == 3


def test_domains_names_each_one_with_its_own_error(capsys, node):
    code, out, _ = run(
        capsys, "agent", "-c", node, "--domains", "good1,off,missing", "--json", "hostname"
    )
    lines = json_lines(out)
    assert lines["good1"]["result"] == socket.gethostname()
    assert lines["off"]["exit"] == 3 and "is shut off" in lines["off"]["error"]
    assert lines["missing"]["exit"] == 8 and "no domain 'missing'" in lines["missing"]["error"]
    assert code == 8


def test_human_output_is_one_line_per_domain(capsys, node):
    code, out, _ = run(capsys, "agent", "-c", node, "--domains", "good1,good2,dead", "osinfo")
    lines = sorted(out.splitlines())
    assert len(lines) == 3
    assert lines[0].startswith("dead: error: no agent socket at ")
    assert lines[1].startswith("good1: ") and "pretty_name=" in lines[1]
    assert lines[2].startswith("good2: ")
    assert code == 3


def test_concurrency_one_still_reaches_every_domain(capsys, node):
    code, out, _ = run(
        capsys, "agent", "-c", node, "--concurrency", "1", "--domains", "good1,good2", "time"
    )
    assert code == 0 and sorted(line.split(":")[0] for line in out.splitlines()) == [
        "good1",
        "good2",
    ]


def test_status_all(capsys, node):
    code, out, _ = run(capsys, "status", "-c", node, "--all", "--json", "--timeout", "1")
    lines = json_lines(out)
    assert sorted(lines) == sorted(RUNNING)
    assert lines["good1"]["result"]["agent"] and lines["good1"]["exit"] == 0
    assert lines["dead"]["result"]["agent"] is None and lines["dead"]["exit"] == 3
    assert lines["good1"]["ok"] and not lines["dead"]["ok"]  # as status's exit says
    assert lines["hung"]["exit"] in (3, 4)  # reported, whether as silent or as timed out
    assert code == max(line["exit"] for line in lines.values())


def test_status_domains_human(capsys, node):
    code, out, _ = run(capsys, "status", "-c", node, "--domains", "good2,off,missing")
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert lines["good2"].startswith("good2: running, agent answering (")
    assert lines["off"].startswith("off: shut off, agent unreachable: ")
    assert lines["missing"].startswith("missing: error: no domain 'missing'")
    assert code == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent", "good1", "--all", "ping"], "give one of DOMAIN, --domains, --all"),
        (["agent", "--socket", "/x.sock", "--domains", "a", "ping"], "give one of DOMAIN"),
        (["agent", "--all", "exec", "true"], "'gagent agent exec' runs on one domain at a time"),
        (["agent", "--domains", "a,,b", "ping"], "--domains wants names separated by commas"),
        (["status", "good1", "--all"], "give one of DOMAIN, --domains A,B or --all"),
    ],
)
def test_usage_errors(capsys, node, argv, message):
    code, out, err = run(capsys, *argv[:1], "-c", node, *argv[1:])
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith(f"gagent: error: {message}")


def test_info_is_summed_up_on_its_line(capsys, node):
    code, out, _ = run(capsys, "agent", "-c", node, "--domains", "good1", "info")
    assert code == 0
    assert re.fullmatch(r"good1: version \S+, \d+ commands enabled\n", out), out


def test_a_libvirtd_that_never_answers_ends_on_the_deadline(capsys, tmp_path):
    """Connecting (and listing) is bounded by --timeout too, and said to be libvirt's."""
    path = tmp_path / "libvirt-sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    try:
        uri = f"qemu+unix:///system?socket={path}"
        code, out, err = run(capsys, "agent", "-c", uri, "--all", "--timeout", "0.5", "ping")
    finally:
        listener.close()
    assert (code, out) == (4, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"gagent: error: timed out after 0.5s waiting for libvirt ({uri})")


def test_all_reaches_a_domain_named_like_an_id_by_itself(capsys, tmp_path):
    # 'vm1' runs with ID 1; the domain *named* "1" must be asked for by its UUID, not by ID
    path = tmp_path / "node.xml"
    path.write_text(
        "<node>"
        + _domain("vm1", tmp_path / "vm1.sock")
        + _domain("1", tmp_path / "one.sock")
        + "</node>"
    )
    code, out, _err = run(capsys, "agent", "-c", f"test://{path}", "--all", "--json", "ping")
    lines = json_lines(out)
    assert sorted(lines) == ["1", "vm1"]
    assert "one.sock" in lines["1"]["error"] and "vm1.sock" not in lines["1"]["error"]
    assert "vm1.sock" in lines["vm1"]["error"]
    assert code == 3

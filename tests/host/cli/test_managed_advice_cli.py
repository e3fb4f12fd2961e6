"""What ``status``, ``agent``, ``fsfreeze check``, ``channel probe`` and ``channel add
--dry-run`` advise for a domain a manager owns (oVirt/VDSM, OpenStack nova, KubeVirt),
in-process against libvirt's test driver: never a ``channel add`` that would then be
refused, but ``--transport libvirt`` (the exact command) when the domain has
org.qemu.guest_agent.0, else the manager's way to add that channel."""

from __future__ import annotations

import pytest
from libvirt_domains import MANAGER_METADATA, set_manager_metadata

from gagent.host.channel import LIBVIRT_AGENT_CHANNEL
from gagent.host.cli import main
from gagent.host.domxml import parse_domain
from gagent.host.managed import manager_of

URI = "test:///default"
LIBVIRTS_CHANNEL = (
    f"    <channel type='unix'>\n      <target type='virtio' name='{LIBVIRT_AGENT_CHANNEL}'/>\n"
    "    </channel>\n"
)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def managed(conn, make_domain, manager: str, devices: str = "") -> tuple[str, str]:
    """A running domain owned by ``manager``, and the manager's own advice text."""
    name = make_domain(devices)
    set_manager_metadata(conn, name, manager)
    found = manager_of(parse_domain(conn.lookupByName(name).XMLDesc(0)))
    assert found is not None and found.name == manager
    return name, found.advice


def refused(manager: str) -> str:
    return f"{manager} manages the domain, so gagent adds no channel to it"


@pytest.mark.parametrize("manager", sorted(MANAGER_METADATA))
def test_without_libvirts_channel_every_command_names_the_managers_way(
    capsys, conn, make_domain, manager
):
    name, advice = managed(conn, make_domain, manager)
    hint = f"({refused(manager)}: {advice})"

    code, out, err = run(capsys, "status", name, "-c", URI)
    assert (code, err) == (3, "")
    assert out.rstrip("\n").endswith(hint), out

    code, out, err = run(capsys, "agent", name, "-c", URI, "ping")
    assert (code, out) == (3, "")
    assert err.rstrip("\n").endswith(hint), err

    code, out, err = run(capsys, "fsfreeze", "check", name, "-c", URI)
    assert code == 10
    assert f"fix: {refused(manager)}: {advice}\n" in out, out

    code, out, err = run(capsys, "channel", "probe", name, "-c", URI, "--wait", "0")
    assert (code, out) == (3, "")
    assert err.rstrip("\n").endswith(hint), err

    assert "channel add" not in out + err


def test_with_libvirts_channel_the_advice_is_the_exact_transport_libvirt_command(
    capsys, conn, make_domain
):
    name, _ = managed(conn, make_domain, "OpenStack nova", LIBVIRTS_CHANNEL)
    hint = (
        f"({refused('OpenStack nova')}; reach its agent through libvirt ({LIBVIRT_AGENT_CHANNEL}): "
        f"gagent agent {name} -c {URI} --transport libvirt ping)"
    )

    code, out, err = run(capsys, "agent", name, "-c", URI, "--transport", "socket", "ping")
    assert (code, out) == (3, "")
    assert err.rstrip("\n").endswith(hint), err

    code, out, err = run(capsys, "fsfreeze", "check", name, "-c", URI, "--transport", "socket")
    assert code == 10
    assert f"fix: {hint[1:-1]}\n" in out, out

    code, out, err = run(capsys, "channel", "probe", name, "-c", URI, "--wait", "0")
    assert (code, out) == (3, "")
    assert err.rstrip("\n").endswith(hint), err


def test_a_plain_domain_is_still_told_channel_add(capsys, conn, make_domain):
    name = make_domain()
    code, out, _ = run(capsys, "status", name, "-c", URI)
    assert code == 3
    assert out.rstrip("\n").endswith(f"(add one: gagent channel add {name} -c {URI})"), out


def test_channel_add_dry_run_says_the_real_run_is_refused(capsys, conn, make_domain):
    """A dry run exits 0 like any preview; one warning line says the real run is refused."""
    name, advice = managed(conn, make_domain, "OpenStack nova")
    code, out, err = run(capsys, "channel", "add", name, "-c", URI, "--dry-run")
    assert (code, err) == (0, "")
    assert out.startswith("--- current\n")
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, out
    assert warnings[0].startswith(
        f"warning: the real run is refused without --force: domain {name} is managed by "
        "OpenStack nova"
    )
    assert advice in warnings[0]
    assert warnings[0].endswith("--force")
    # and the real run is refused, as the warning said
    assert run(capsys, "channel", "add", name, "-c", URI)[0] == 2


def test_on_a_vdsmd_host_the_advice_agrees_with_the_refusal(capsys, conn, make_domain, monkeypatch):
    """VDSM owns every domain of its host, metadata or not: channel add refuses a plain
    domain there, so status must not advise it either."""
    from gagent.host import managed

    monkeypatch.setattr(managed, "vdsm_running", lambda: True)
    name = make_domain()
    code, out, _ = run(capsys, "status", name, "-c", URI)
    assert code == 3
    assert f"({refused('oVirt/VDSM')}: oVirt adds the guest agent channel" in out, out
    code, _, err = run(capsys, "channel", "add", name, "-c", URI)
    assert code == 2
    assert f"domain {name} is managed by oVirt/VDSM (its host runs vdsmd)" in err


@pytest.mark.parametrize("blocking", [False, True], ids=["trio-route", "blocking-route"])
def test_libvirts_relay_finding_no_agent_advises_the_exact_channel_add(
    capsys, conn, make_domain, blocking
):
    """The test driver relays no agent command: the relay's error names the domain and URI
    (it named a bare 'gagent channel add DOMAIN'), and for a managed one the manager's way."""
    name = make_domain(LIBVIRTS_CHANNEL)
    argv = ["agent", name, "-c", URI, "--transport", "libvirt"]
    # 'ping' runs on the blocking route; 'fsfreeze status' on the trio one
    argv += ["ping"] if blocking else ["fsfreeze", "status"]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (3, ""), err
    assert err.rstrip("\n").endswith(
        f"(add a channel gagent can use: gagent channel add {name} -c {URI})"
    ), err
    set_manager_metadata(conn, name, "OpenStack nova")
    code, out, err = run(capsys, *argv)
    assert code == 3 and "channel add" not in err, err
    assert refused("OpenStack nova") in err, err

"""A freeze left behind in the real guest: every command says "frozen", with exit 13 and
the command that thaws it, and that command works.

The freeze is made as an operator would leave one behind (``gagent agent --socket
... fsfreeze freeze``, which exits with the guest frozen); every command then runs
as its own ``gagent`` process, as in the field.  The guest is thawed in a finally,
shielded, whatever happens.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import trio

from gagent.client import open_agent
from gagent.errors import GuestIsFrozen
from gagent.fs_types import FsfreezeStatus
from gagent.host.session import open_domain_agent

pytestmark = pytest.mark.e2e

GAGENT = Path(sys.executable).with_name("gagent")
EXIT_GUEST_FROZEN = 13
#: Bounds one gagent process (start-up included) on a busy TCG host.
CLI_DEADLINE = 120
AGENT_TIMEOUT = "60"


async def gagent(*argv: str) -> tuple[int, str, str]:
    with trio.fail_after(CLI_DEADLINE):
        proc = await trio.run_process(
            [str(GAGENT), *argv], stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gagent: error: "), err
    return lines[0]


def advised_command(line: str) -> list[str]:
    """The words of the command the error line tells the operator to run."""
    found = re.fullmatch(r".*: run '(.*)'", line)
    assert found, line
    words = shlex.split(found.group(1))
    assert words[0] == "gagent", words
    return words[1:]


async def thaw_shielded(socket_path: str) -> FsfreezeStatus:
    """Thaw through our channel whatever happened to the test, within a bound."""
    with trio.CancelScope(shield=True), trio.fail_after(60):
        async with open_agent(socket_path) as agent:
            await agent.fsfreeze_thaw()
            return await agent.fsfreeze_status()


async def test_a_freeze_left_behind_is_reported_as_frozen(main_domain, tmp_path):
    socket_path = str(main_domain.socket_path)
    on_socket = ["agent", "--socket", socket_path, "--timeout", AGENT_TIMEOUT]
    on_domain = ["agent", main_domain.name, "-c", main_domain.uri, "--timeout", AGENT_TIMEOUT]
    socket_thaw = shlex.join(["gagent", "agent", "--socket", socket_path, "fsfreeze", "thaw"])
    local = tmp_path / "small.conf"
    local.write_text("x = 1\n")
    try:
        code, out, err = await gagent(*on_socket, "fsfreeze", "freeze")
        assert (code, err) == (0, ""), err
        assert re.fullmatch(r"froze [1-9]\d* filesystem\(s\)\n", out), out

        for argv, evidence in [
            (["ping"], "its agent answers guest-ping but refuses other commands"),
            (["hostname"], "so guest-get-host-name was not sent"),
            (["fsinfo"], "so guest-get-fsinfo was not sent"),
            (["time"], "so guest-get-time was not sent"),
            (["exec", "--", "/bin/true"], "so guest-exec was not sent"),
            (["copy-to", str(local), "/tmp/gagent-frozen-copy"], "was not sent"),
        ]:
            code, out, err = await gagent(*on_socket, *argv)
            line = one_error_line(err)
            assert (code, out) == (EXIT_GUEST_FROZEN, ""), (argv, err)
            assert line.startswith(
                f"gagent: error: the guest behind {socket_path} is frozen "
                "(guest-fsfreeze-status: frozen)"
            ), line
            assert evidence in line and line.endswith(f": run '{socket_thaw}'"), line

        # By domain name: the same state, and the command it advises thaws the guest.
        code, out, err = await gagent(*on_domain, "hostname")
        line = one_error_line(err)
        assert (code, out) == (EXIT_GUEST_FROZEN, ""), err
        assert "is frozen (guest-fsfreeze-status: frozen)" in line, line
        assert "so guest-get-host-name was not sent" in line, line
        advised = advised_command(line)  # the domain's own thaw, on this connection
        assert advised[:2] == ["thaw", main_domain.name] and advised[2] == "-c", line
        code, out, err = await gagent(*advised)
        assert code == 0, err

        assert await gagent(*on_socket, "ping") == (0, "ok\n", "")
        assert await gagent(*on_domain, "hostname") == (0, f"{main_domain.hostname}\n", "")
    finally:
        status = await thaw_shielded(socket_path)
    assert status is FsfreezeStatus.THAWED


async def test_libvirts_route_reports_its_agent_frozen_too(main_domain):
    """The same diagnosis through qemuAgentCommand: libvirt's own agent, left frozen."""
    uri = main_domain.uri

    async def thaw_libvirts_agent() -> FsfreezeStatus:
        with trio.CancelScope(shield=True), trio.fail_after(60):
            async with open_domain_agent(main_domain.name, uri=uri, transport="libvirt") as agent:
                await agent.fsfreeze_thaw()
                return await agent.fsfreeze_status()

    try:
        with trio.fail_after(60):
            async with open_domain_agent(main_domain.name, uri=uri, transport="libvirt") as agent:
                assert await agent.fsfreeze_freeze() >= 1
        # a new conversation, which knows nothing of that freeze
        with trio.fail_after(60):
            async with open_domain_agent(main_domain.name, uri=uri, transport="libvirt") as agent:
                await agent.ping()
                assert await agent.freeze_state() is FsfreezeStatus.FROZEN
                with pytest.raises(GuestIsFrozen) as caught:
                    await agent.host_name()
                with pytest.raises(GuestIsFrozen):
                    await agent.ensure_thawed()
    finally:
        status = await thaw_libvirts_agent()
    assert status is FsfreezeStatus.THAWED
    assert caught.value.command == "guest-get-host-name" and caught.value.status == "frozen"
    assert str(caught.value).startswith(f"guest {main_domain.name} is frozen (guest-fsfreeze")
    assert caught.value.thaw_command.startswith(f"gagent thaw {main_domain.name} -c ")

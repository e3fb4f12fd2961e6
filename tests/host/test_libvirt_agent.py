"""gagent.host.libvirt_agent: typed commands relayed by libvirt's qemuAgentCommand.

libvirt's test driver has no qemuAgentCommand (it refuses with VIR_ERR_NO_SUPPORT,
see test_virt.py), so ``Domain.agent_command`` is replaced here by two stand-ins:

* ``ScriptedDomain`` returns canned replies / raises LibvirtAgentError with
  libvirt's own wording (libvirt 9.0 src/qemu/qemu_agent.c, qemu_domain.c:
  "internal error: unable to execute QEMU agent command '%s': %s" with code
  VIR_ERR_INTERNAL_ERROR; "Guest agent is not responding: QEMU guest agent is
  not connected" with VIR_ERR_AGENT_UNRESPONSIVE; ...);
* ``RelayDomain`` does what libvirt does for qemuAgentArbitraryCommand over the
  real qemu-ga (fixture): sends the request, returns the reply object as JSON
  text, and turns an error reply into libvirt's INTERNAL_ERROR message, so the
  mapping is checked against the agent's real descriptions.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import libvirt
import pytest
import trio

from gagent import transfer
from gagent.errors import (
    AgentError,
    AgentUnavailable,
    CommandDisabled,
    CommandNotFound,
    CommandUnavailable,
    ConnectionLost,
    GuestFrozen,
    ProtocolError,
    ReplyTooLarge,
    UsageError,
)
from gagent.fs_types import FsfreezeStatus
from gagent.host.libvirt_agent import (
    LIBVIRT_AGENT_READ_LIMIT,
    LIBVIRT_AGENT_REQUEST_MAX,
    LIBVIRT_RPC_STRING_MAX,
    LibvirtAgent,
    _libvirt_timeout,
    _map_error,
)
from gagent.host.virt import LibvirtAgentError

TIMEOUT = 10

GUEST_INFO = {
    "version": "7.2.22",
    "supported_commands": [
        {"name": n, "enabled": True, "success-response": n != "guest-shutdown"}
        for n in (
            "guest-ping", "guest-info", "guest-get-osinfo", "guest-get-host-name",
            "guest-shutdown", "guest-fsfreeze-status", "guest-get-time", "guest-file-open",
        )
    ],
}  # fmt: skip


def libvirt_error(message: str, code: int, domain: str = "vm1") -> LibvirtAgentError:
    """A LibvirtAgentError as gagent.host.virt builds it from a libvirtError."""
    return LibvirtAgentError(
        f"agent command through libvirt on {domain}: {message}", code=code, libvirt_message=message
    )


def refusal(command: str, desc: str) -> LibvirtAgentError:
    """libvirt's report of an agent error reply (qemuAgentCheckError)."""
    return libvirt_error(
        f"internal error: unable to execute QEMU agent command '{command}': {desc}",
        libvirt.VIR_ERR_INTERNAL_ERROR,
    )


class ScriptedDomain:
    """Stands in for gagent.host.virt.Domain: agent_command answers from a script."""

    def __init__(self, script: dict[str, Any], name: str = "vm1"):
        self.name = name
        self.script = {"guest-info": json.dumps({"return": GUEST_INFO}), **script}
        self.requests: list[tuple[dict[str, Any], int]] = []

    async def agent_command(self, request: str, wait_seconds: int) -> str:
        await trio.lowlevel.checkpoint()
        parsed = json.loads(request)
        self.requests.append((parsed, wait_seconds))
        answer = self.script[parsed["execute"]]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def agent_for(script: dict[str, Any]) -> tuple[LibvirtAgent, ScriptedDomain]:
    domain = ScriptedDomain(script)
    return LibvirtAgent(domain), domain  # type: ignore[arg-type]


# ------------------------------------------------------------- reply parsing


async def test_reply_return_values_are_typed():
    osinfo = {"id": "debian", "pretty-name": "Debian GNU/Linux 12", "kernel-release": "6.1.0"}
    agent, domain = agent_for(
        {
            "guest-ping": '{"return":{}}',
            "guest-get-osinfo": json.dumps({"return": osinfo}),
            "guest-get-host-name": '{"return":{"host-name":"guest1"}}',
            "guest-fsfreeze-status": '{"return":"thawed"}',
        }
    )
    with trio.fail_after(TIMEOUT):
        assert await agent.ping() is None
        info = await agent.osinfo()
        assert (info.id, info.pretty_name, info.kernel_release) == (
            "debian", "Debian GNU/Linux 12", "6.1.0",
        )  # fmt: skip
        assert await agent.host_name() == "guest1"
        assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
    sent = [request["execute"] for request, _ in domain.requests]
    assert sent == [
        "guest-ping", "guest-info", "guest-get-osinfo", "guest-get-host-name",
        "guest-fsfreeze-status",
    ]  # fmt: skip


async def test_request_is_the_qga_json_with_arguments():
    agent, domain = agent_for({"guest-file-open": '{"return": 1000}'})
    with trio.fail_after(TIMEOUT):
        assert await agent.file_open("/etc/hostname") == 1000
    request, _ = domain.requests[-1]
    assert request == {
        "execute": "guest-file-open",
        "arguments": {"path": "/etc/hostname", "mode": "r"},
    }


async def test_name_says_through_libvirt():
    agent, _ = agent_for({})
    assert agent.name == "domain vm1 (through libvirt)"


@pytest.mark.parametrize("reply", ["not json", "", "[1, 2]", '{"neither": 1}', '"text"'])
async def test_unexpected_reply_is_protocol_error(reply):
    agent, _ = agent_for({"guest-ping": reply})
    with trio.fail_after(TIMEOUT), pytest.raises(ProtocolError) as info:
        await agent.ping()
    assert "guest-ping" in str(info.value)
    assert info.value.data == reply.encode()[:512]


async def test_error_object_in_reply_is_agent_error():
    agent, _ = agent_for(
        {"guest-ping": '{"error": {"class": "GenericError", "desc": "odd relay"}}'}
    )
    with trio.fail_after(TIMEOUT), pytest.raises(AgentError) as info:
        await agent.ping()
    assert (info.value.error_class, info.value.desc) == ("GenericError", "odd relay")


# ------------------------------------------------------------- deadlines


async def test_deadline_is_passed_on_to_libvirt():
    agent, domain = agent_for({"guest-ping": '{"return":{}}'})
    with trio.fail_after(7.2):
        await agent.ping()
    assert domain.requests[-1][1] in (7, 8)  # ceil of what remains of 7.2 s
    await agent.ping()  # no deadline: libvirt's default
    assert domain.requests[-1][1] == -1


@pytest.mark.parametrize(
    ("remaining", "seconds"),
    [(float("inf"), -1), (0.01, 1), (0.0, 1), (-3.0, 1), (1.0, 1), (1.2, 2), (300.0, 300)],
)
def test_libvirt_timeout(remaining, seconds):
    assert _libvirt_timeout(remaining) == seconds


# ------------------------------------------------------------- no-reply commands


async def test_shutdown_succeeds_when_the_guest_goes_away():
    gone = libvirt_error(
        "Guest agent is not responding: Guest agent disappeared while executing command",
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    )
    agent, domain = agent_for({"guest-shutdown": gone})
    with trio.fail_after(TIMEOUT):
        assert await agent.shutdown() is None
    assert domain.requests[-1][0] == {
        "execute": "guest-shutdown",
        "arguments": {"mode": "powerdown"},
    }


async def test_shutdown_empty_reply_is_success():
    agent, _ = agent_for({"guest-shutdown": ""})
    with trio.fail_after(TIMEOUT):
        assert await agent.shutdown("reboot") is None


async def test_shutdown_refused_by_the_agent_is_raised():
    agent, _ = agent_for(
        {"guest-shutdown": refusal("guest-shutdown", "Command guest-shutdown has been disabled")}
    )
    with trio.fail_after(TIMEOUT), pytest.raises(CommandDisabled):
        await agent.shutdown()


async def test_unresponsive_agent_on_a_normal_command_is_unavailable():
    agent, _ = agent_for(
        {
            "guest-ping": libvirt_error(
                "Guest agent is not responding: QEMU guest agent is not connected",
                libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
            )
        }
    )
    with trio.fail_after(TIMEOUT), pytest.raises(AgentUnavailable) as info:
        await agent.ping()
    assert "QEMU guest agent is not connected" in str(info.value)
    assert "vm1" in str(info.value)


# ------------------------------------------------------------- _map_error


def mapped(exc: LibvirtAgentError, command: str = "guest-foo", arguments=None) -> Exception:
    return _map_error(command, arguments, exc, "vm1")


def test_map_unknown_command():
    err = mapped(refusal("guest-foo", "The command guest-foo has not been found"))
    assert type(err) is CommandNotFound
    assert (err.command, err.error_class) == ("guest-foo", "CommandNotFound")
    assert err.desc == "The command guest-foo has not been found"


def test_map_unknown_command_without_desc():
    # libvirt's wording when the reply had a class but no desc
    err = mapped(refusal("guest-foo", "The command has not been found"))
    assert type(err) is CommandNotFound


def test_map_disabled_command():
    err = mapped(refusal("guest-exec", "Command guest-exec has been disabled"), "guest-exec")
    assert type(err) is CommandDisabled
    assert err.command == "guest-exec"


def test_map_disabled_by_freeze():
    desc = "Command guest-get-time has been disabled: the agent is in frozen state"
    err = mapped(refusal("guest-get-time", desc), "guest-get-time")
    assert type(err) is GuestFrozen


def test_map_generic_agent_error_keeps_desc_and_arguments():
    desc = "failed to open file '/nope' (mode: 'r'): No such file or directory"
    args = {"path": "/nope", "mode": "r"}
    err = mapped(refusal("guest-file-open", desc), "guest-file-open", args)
    assert type(err) is AgentError
    assert (err.error_class, err.desc, err.arguments) == ("GenericError", desc, args)


def test_map_multiline_desc():
    err = mapped(refusal("guest-exec", "line one\nline two"), "guest-exec")
    assert err.desc == "line one\nline two"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
         "Guest agent is not responding: QEMU guest agent is not connected"),
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
         "Guest agent is not responding: Guest agent not available for now"),
        (libvirt.VIR_ERR_AGENT_UNSYNCED,
         "Guest agent replied with wrong id to guest-sync command"),
    ],
)  # fmt: skip
def test_map_unreachable_agent(code, message):
    err = mapped(libvirt_error(message, code))
    assert type(err) is AgentUnavailable
    assert message in str(err)
    assert err.hint == "is qemu-ga running in the guest on org.qemu.guest_agent.0?"


def test_map_reply_over_libvirts_bound_is_reply_too_large():
    # as libvirt 9.0 reports it (virReportSystemError(ERANGE, ...)), seen for a
    # guest-exec-status carrying 9 MB of output
    message = "No complete agent response found in 10485760 bytes: Numerical result out of range"
    err = mapped(libvirt_error(message, libvirt.VIR_ERR_SYSTEM_ERROR), "guest-exec-status")
    assert type(err) is ReplyTooLarge
    assert (err.limit, err.command) == (LIBVIRT_AGENT_READ_LIMIT, "guest-exec-status")
    text = str(err)
    assert "systemctl restart qemu-guest-agent" in text and "--transport socket" in text
    assert "max_reply_size" not in text  # not ours to raise


def test_map_reply_over_libvirts_rpc_bound_is_reply_too_large():
    # a guest-file-read of 4 MiB through qemu:///system (measured)
    message = "Unable to encode message payload"
    err = mapped(libvirt_error(message, libvirt.VIR_ERR_RPC), "guest-file-read")
    assert type(err) is ReplyTooLarge
    assert (err.limit, err.command) == (LIBVIRT_RPC_STRING_MAX, "guest-file-read")
    assert "the agent itself is fine" in str(err) and "--transport socket" in str(err)


def test_map_agent_libvirt_gave_up_on_names_the_way_back():
    message = "Guest agent is not responding: QEMU guest agent is not available due to an error"
    err = mapped(libvirt_error(message, libvirt.VIR_ERR_AGENT_UNRESPONSIVE))
    assert type(err) is AgentUnavailable
    assert message in str(err)
    assert "restart qemu-guest-agent" in err.hint and "--transport socket" in err.hint


def test_libvirt_route_bounds_file_reads_by_libvirts_reply_limit():
    agent = LibvirtAgent(ScriptedDomain({}))
    assert agent.max_reply_size == LIBVIRT_RPC_STRING_MAX
    with pytest.raises(UsageError, match="max_reply_size of 4194304"):
        transfer._check_chunk_size(agent, 4 * 1024 * 1024, reading=True)
    transfer._check_chunk_size(agent, transfer.DEFAULT_CHUNK, reading=True)
    # a request must fit what libvirt writes to the agent in one go (64 KiB, measured)
    assert agent.max_request_size == LIBVIRT_AGENT_REQUEST_MAX == 64 * 1024
    with pytest.raises(UsageError, match="bound on one request of 65536"):
        transfer._check_chunk_size(agent, transfer.DEFAULT_CHUNK)
    transfer._check_chunk_size(agent, transfer.largest_write_chunk(agent))


def test_map_domain_not_running():
    message = "Requested operation is not valid: domain is not running"
    err = mapped(libvirt_error(message, libvirt.VIR_ERR_OPERATION_INVALID))
    assert type(err) is AgentUnavailable
    assert message in str(err)
    assert err.hint == "is the domain running?"


def test_map_missing_reply_is_connection_lost():
    err = mapped(
        libvirt_error("internal error: Missing agent reply object", libvirt.VIR_ERR_INTERNAL_ERROR)
    )
    assert type(err) is ConnectionLost
    assert err.command == "guest-foo"
    assert "vm1" in str(err) and "Missing agent reply object" in str(err)


def test_map_uses_str_when_libvirt_message_is_missing():
    exc = LibvirtAgentError(
        "internal error: unable to execute QEMU agent command 'guest-foo': "
        "The command guest-foo has not been found",
        code=1,
    )
    assert type(mapped(exc)) is CommandNotFound


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (libvirt.VIR_ERR_NO_SUPPORT,
         "this function is not supported by the connection driver: virDomainQemuAgentCommand"),
        (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
         "argument unsupported: QEMU guest agent is not configured"),
    ],
)  # fmt: skip
def test_map_no_agent_route_is_not_connection_lost(code, message):
    err = mapped(libvirt_error(message, code))
    assert not isinstance(err, ConnectionLost)
    assert message in str(err)


def test_map_libssh_transport_error_is_not_an_agent_problem():
    assert libvirt.VIR_ERR_LIBSSH == 98
    err = mapped(libvirt_error("libssh transport error: Socket error: Connection reset", 98))
    assert not isinstance(err, AgentUnavailable)


# ---------------------------------------------- through a libvirt-like relay


class RelayDomain:
    """What libvirt's qemuAgentArbitraryCommand does, over the real qemu-ga socket."""

    def __init__(self, path: str, name: str = "relay-vm"):
        self.path = path
        self.name = name

    async def agent_command(self, request: str, wait_seconds: int) -> str:
        command = json.loads(request)["execute"]
        stream = await trio.open_unix_socket(self.path)
        async with stream:
            await stream.send_all(request.encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if "error" in reply:
            desc = reply["error"].get("desc") or reply["error"].get("class")
            raise libvirt_error(
                f"internal error: unable to execute QEMU agent command '{command}': {desc}",
                libvirt.VIR_ERR_INTERNAL_ERROR,
                self.name,
            )
        return json.dumps(reply, separators=(",", ":"))


@pytest.fixture
def relayed(qemu_ga) -> LibvirtAgent:
    return LibvirtAgent(RelayDomain(str(qemu_ga.socket_path)))  # type: ignore[arg-type]


async def test_relay_typed_commands_against_real_agent(relayed):
    with trio.fail_after(TIMEOUT):
        await relayed.ping()
        info = await relayed.info()
        assert info.commands["guest-ping"].enabled
        assert not info.commands["guest-exec"].enabled
        assert await relayed.host_name() == socket.gethostname()


async def test_relay_real_unknown_command(relayed):
    with trio.fail_after(TIMEOUT), pytest.raises(CommandNotFound) as info:
        await relayed.call("guest-no-such-command", check=False)
    assert info.value.desc == "The command guest-no-such-command has not been found"


async def test_relay_real_disabled_command(relayed):
    with trio.fail_after(TIMEOUT), pytest.raises(CommandDisabled) as info:
        await relayed.call("guest-exec", {"path": "/bin/true"}, check=False)
    assert "has been disabled" in info.value.desc
    with trio.fail_after(TIMEOUT), pytest.raises(CommandUnavailable):
        await relayed.call("guest-exec", {"path": "/bin/true"})  # refused before sending


async def test_relay_real_agent_error(relayed, tmp_path):
    missing = str(tmp_path / "missing")
    with trio.fail_after(TIMEOUT), pytest.raises(AgentError) as info:
        await relayed.file_open(missing)
    assert type(info.value) is AgentError
    assert missing in info.value.desc and "No such file or directory" in info.value.desc
    assert info.value.arguments == {"path": missing, "mode": "r"}

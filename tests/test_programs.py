"""gagent.programs.run_program: against a scripted agent on memory streams (guest-exec is
blocked on the host's real qemu-ga, which only shows that the refusal is local)."""

from __future__ import annotations

import itertools
import subprocess
from typing import Any

import pytest
import trio
from scripted_agent import b64, guest_info, with_fake

import gagent
from gagent.errors import AgentError, CommandUnavailable, UsageError
from gagent.programs import _REDIRECT, OUTPUT_LIMIT, run_program

TIMEOUT = 30
MiB = 1024 * 1024
#: libvirt's bound on one agent reply (gagent.host.libvirt_agent.LIBVIRT_RPC_STRING_MAX)
LIBVIRT_BOUND = 4 * MiB

EXEC_COMMANDS = ("guest-exec", "guest-exec-status")
FILE_COMMANDS = ("guest-file-open", "guest-file-read", "guest-file-close")


async def test_run_program_polls_with_backoff(autojump_clock):
    statuses = iter(
        [
            {"exited": False},
            {"exited": False},
            {
                "exited": True,
                "exitcode": 3,
                "out-data": b64(b"hello\n"),
                "err-data": b64(b"warn\n"),
                "err-truncated": True,
            },
        ]
    )
    handlers = {
        "guest-info": guest_info(*EXEC_COMMANDS),
        "guest-exec": lambda args: {"pid": 4242},
        "guest-exec-status": lambda args: next(statuses),
    }
    results = []

    async def body(agent) -> None:
        results.append(
            await run_program(
                agent,
                ["/bin/sh", "-c", "echo hello"],
                input=b"in\x00",
                env={"LANG": "C"},
                poll_interval=0.1,
                max_poll_interval=1.0,
            )
        )

    with trio.fail_after(TIMEOUT):
        fake = await with_fake(handlers, body)
    (result,) = results
    assert (result.pid, result.exit_code, result.signal) == (4242, 3, None)
    assert (result.stdout, result.stderr) == (b"hello\n", b"warn\n")
    assert result.stderr_truncated and not result.stdout_truncated
    assert not result.succeeded
    assert result.argv == ("/bin/sh", "-c", "echo hello")
    ((exec_args, _),) = fake.sent("guest-exec")
    assert exec_args == {
        "path": "/bin/sh",
        "arg": ["-c", "echo hello"],
        "env": ["LANG=C"],
        "input-data": b64(b"in\x00"),
        "capture-output": True,
    }
    polls = fake.sent("guest-exec-status")
    assert [args for args, _ in polls] == [{"pid": 4242}] * 3
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(polls)]
    assert gaps == pytest.approx([0.1, 0.15])
    assert not fake.sent("guest-get-osinfo")  # this route takes any exec reply


async def test_run_program_killed_and_bad_argv(autojump_clock):
    handlers = {
        "guest-info": guest_info(*EXEC_COMMANDS),
        "guest-exec": lambda args: {"pid": 7},
        "guest-exec-status": lambda args: {"exited": True, "signal": 9},
    }
    results = []

    async def body(agent) -> None:
        results.append(await run_program(agent, ["/bin/sleep", "100"], capture_output=False))
        for bad in ([], "/bin/true", ["/bin/true", 1]):
            with pytest.raises(UsageError):
                await run_program(agent, bad)

    with trio.fail_after(TIMEOUT):
        fake = await with_fake(handlers, body)
    (result,) = results
    assert (result.exit_code, result.signal, result.stdout, result.succeeded) == (
        None,
        9,
        b"",
        False,
    )
    assert "capture-output" not in fake.sent("guest-exec")[0][0]
    assert len(fake.sent("guest-exec")) == 1


async def test_refused_locally_by_the_real_agent(qemu_ga):
    # guest-exec is blocked on the host's qemu-ga: run_program never sends it,
    # whichever way it would collect the output
    for bound in (None, LIBVIRT_BOUND):
        options = {} if bound is None else {"max_reply_size": bound}
        with trio.fail_after(TIMEOUT):
            async with gagent.open_agent(qemu_ga.socket_path, **options) as agent:
                with pytest.raises(CommandUnavailable, match="guest-exec"):
                    await run_program(agent, ["/bin/true"])


# ------------------------------------- a route too small for guest-exec-status


class GuestFiles:
    """The guest side of the output files: guest-exec of the redirecting shell
    'writes' them, guest-file-* reads them, guest-exec of rm removes them."""

    def __init__(self, os_id: str, out: bytes, err: bytes, exits_after: int = 1, shm: bool = True):
        self.os_id = os_id
        self.directory = "/dev/shm" if shm else "/tmp"  # where the guest's shell puts them
        self.out, self.err = out, err
        self.files: dict[str, bytes] = {}
        self.handles: dict[int, list[Any]] = {}
        self.removed: list[str] = []
        self.polls = 0
        self.exits_after = exits_after
        self.reads: list[int] = []  # counts asked, every file
        self.read_from: dict[str, int] = {}  # bytes handed out, per file

    def handlers(self) -> dict[str, Any]:
        return {
            "guest-info": guest_info("guest-get-osinfo", *EXEC_COMMANDS, *FILE_COMMANDS),
            "guest-get-osinfo": lambda args: {"id": self.os_id},
            "guest-exec": self.exec,
            "guest-exec-status": self.status,
            "guest-file-open": self.open,
            "guest-file-read": self.read,
            "guest-file-close": lambda args: self.handles.pop(args["handle"]) and {},
        }

    def exec(self, args: dict[str, Any]) -> dict[str, Any]:
        if args["path"] == "/bin/rm":
            self.removed += args["arg"][1:]
            return {"pid": 2}
        if args["path"] == "/bin/sh" and "capture-output" not in args:
            name = args["arg"][2]
            self.files[f"{self.directory}/{name}.out"] = self.out
            self.files[f"{self.directory}/{name}.err"] = self.err
        return {"pid": 1}

    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        if args["pid"] == 2:
            return {"exited": True, "exitcode": 0}
        self.polls += 1
        if self.polls < self.exits_after:
            return {"exited": False}
        reply: dict[str, Any] = {"exited": True, "exitcode": 5}
        if self.os_id == "mswindows":  # qemu-ga captured it
            reply.update({"out-data": b64(self.out), "err-data": b64(self.err)})
        return reply

    def open(self, args: dict[str, Any]) -> int:
        if args["path"] not in self.files:
            raise AgentError("guest-file-open", "GenericError", "no such file")
        handle = len(self.handles) + 10
        self.handles[handle] = [self.files[args["path"]], 0, args["path"]]
        return handle

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        data, pos, path = self.handles[args["handle"]]
        self.reads.append(args["count"])
        piece = data[pos : pos + args["count"]]
        self.handles[args["handle"]][1] = pos + len(piece)
        self.read_from[path] = self.read_from.get(path, 0) + len(piece)
        return {"count": len(piece), "buf-b64": b64(piece), "eof": pos + len(piece) >= len(data)}


async def _run(guest: GuestFiles, argv: list[str], **kw: Any) -> tuple[Any, Any]:
    results = []

    async def body(agent) -> None:
        results.append(await run_program(agent, argv, **kw))

    fake = await with_fake(guest.handlers(), body, max_reply_size=LIBVIRT_BOUND)
    return results[0], fake


async def test_small_route_posix_guest_output_goes_through_files(autojump_clock):
    guest = GuestFiles("debian", out=b"o" * (3 * MiB), err=b"oops\n", exits_after=3)
    with trio.fail_after(TIMEOUT):
        result, fake = await _run(guest, ["/usr/bin/journalctl", "-b"], input=b"x")
    assert (result.exit_code, result.stdout, result.stderr) == (5, guest.out, b"oops\n")
    assert not (result.stdout_truncated or result.stderr_truncated)
    ((shell, _), (rm, _)) = fake.sent("guest-exec")
    assert shell["path"] == "/bin/sh" and "capture-output" not in shell
    script, name, *argv = shell["arg"][1:]
    assert shell["arg"][0] == "-c" and argv == ["/usr/bin/journalctl", "-b"]
    assert name.startswith(".gagent-exec-") and "/" not in name and "set -C" in script
    assert shell["input-data"] == b64(b"x")
    files = [f"{d}/{name}.{kind}" for d in ("/dev/shm", "/tmp") for kind in ("out", "err")]
    assert rm == {"path": "/bin/rm", "arg": ["-f", *files]}
    assert guest.removed == files and not guest.handles
    # every read's reply fits libvirt's bound
    assert max(guest.reads) * 4 // 3 < LIBVIRT_BOUND


async def test_small_route_guest_without_dev_shm_uses_tmp(autojump_clock):
    guest = GuestFiles("alpine", out=b"out\n", err=b"err\n", shm=False)
    with trio.fail_after(TIMEOUT):
        result, _ = await _run(guest, ["/bin/echo", "out"])
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    assert all(path.startswith("/tmp/") for path in guest.read_from)


async def test_small_route_output_is_cut_at_the_limit_without_reading_it_all(autojump_clock):
    guest = GuestFiles("debian", out=b"o" * (OUTPUT_LIMIT + 5 * MiB), err=b"")
    with trio.fail_after(TIMEOUT):
        result, _ = await _run(guest, ["/bin/cat", "/dev/urandom"])
    assert len(result.stdout) == OUTPUT_LIMIT and result.stdout_truncated
    assert result.stderr == b"" and not result.stderr_truncated
    # one byte past the limit tells it was cut; the rest stays unread
    stdout_file = next(p for p in guest.read_from if p.endswith(".out"))
    assert guest.read_from[stdout_file] == OUTPUT_LIMIT + 1


async def test_small_route_windows_guest_keeps_qemu_ga_capture(autojump_clock):
    guest = GuestFiles("mswindows", out=b"C:\\>", err=b"")
    with trio.fail_after(TIMEOUT):
        result, fake = await _run(guest, ["cmd.exe", "/c", "dir"])
    ((exec_args, _),) = fake.sent("guest-exec")
    assert exec_args["path"] == "cmd.exe" and exec_args["capture-output"] is True
    assert result.stdout == b"C:\\>" and not fake.sent("guest-file-open")


async def test_small_route_cancelled_still_removes_the_files(autojump_clock):
    guest = GuestFiles("debian", out=b"", err=b"", exits_after=10**9)  # never exits
    with trio.fail_after(TIMEOUT):
        results = []

        async def body(agent) -> None:
            with trio.move_on_after(5) as scope:
                results.append(await run_program(agent, ["/bin/sleep", "1000"]))
            assert scope.cancelled_caught

        fake = await with_fake(guest.handlers(), body, max_reply_size=LIBVIRT_BOUND)
    assert results == []
    name = fake.sent("guest-exec")[0][0]["arg"][2]
    assert guest.removed == [
        f"{d}/{name}.{k}" for d in ("/dev/shm", "/tmp") for k in ("out", "err")
    ]


# ------------------------------------------- the redirecting shell, run for real


def _redirect(tmp_path, argv: list[str], env: dict[str, str] | None = None):
    """The script run_program hands the guest's /bin/sh, with tmp_path as its tmpfs."""
    script = _REDIRECT.replace("/dev/shm", str(tmp_path))
    proc = subprocess.run(
        ["/bin/sh", "-c", script, ".gagent-exec-test", *argv],
        env=env if env is not None else {},
        capture_output=True,
        timeout=30,
    )
    return proc, tmp_path / ".gagent-exec-test.out", tmp_path / ".gagent-exec-test.err"


def test_redirect_keeps_exit_code_output_and_privacy(tmp_path):
    proc, out, err = _redirect(tmp_path, ["sh", "-c", "echo o; echo e >&2; exit 3"])
    assert proc.returncode == 3 and proc.stdout == proc.stderr == b""
    assert (out.read_bytes(), err.read_bytes()) == (b"o\n", b"e\n")
    assert out.stat().st_mode & 0o777 == 0o600  # umask 077: private output
    # an empty environment still finds programs by name
    again = tmp_path / "again"
    again.mkdir()
    proc, out, _ = _redirect(again, ["env"])
    assert proc.returncode == 0, proc


def test_redirect_never_writes_through_a_planted_file(tmp_path):
    planted = tmp_path / ".gagent-exec-test.out"
    planted.write_bytes(b"someone else's")
    proc, out, _ = _redirect(tmp_path, ["echo", "mine"])
    assert proc.returncode != 0 and out.read_bytes() == b"someone else's"

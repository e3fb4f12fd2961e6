"""``gagent agent copy-to|copy-from`` against the real qemu-ga on this host (guest-exec
blocked there: the atomic copy-to is refused, --in-place works), in-process through
main() and, for standard input/output and resource limits, as a subprocess."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gagent.host.cli import main

GAGENT = Path(sys.executable).with_name("gagent")
TIMEOUT = 60


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("gagent: error: "), lines[0]
    return lines[0]


def gagent(*argv: str, **kwargs) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [str(GAGENT), *argv], stderr=subprocess.PIPE, timeout=TIMEOUT, check=False, **kwargs
    )


@pytest.fixture
def sock(qemu_ga) -> str:
    return str(qemu_ga.socket_path)


@pytest.fixture
def work(tmp_path) -> Path:
    path = tmp_path / "work"  # the qemu-ga fixture keeps its own files in tmp_path
    path.mkdir()
    return path


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_copy_to_without_guest_exec_is_refused_with_the_way_out(capsys, sock, work):
    local, guest = work / "local", work / "guest"
    local.write_bytes(b"new")
    guest.write_bytes(b"old")
    code, out, err = run(capsys, "agent", "--socket", sock, "copy-to", str(local), str(guest))
    assert (code, out) == (5, "")
    line = error_line(err)
    assert "needs guest-exec" in line and "--in-place" in line, line
    assert guest.read_bytes() == b"old" and names(work) == ["guest", "local"]
    # the way out it names works
    code, out, err = run(
        capsys, "agent", "--socket", sock, "copy-to", "--in-place", str(local), str(guest)
    )
    assert (code, out, err) == (0, "copied 3 bytes\n", "")
    assert guest.read_bytes() == b"new"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--mode", "rw-r--r--"], "--mode wants octal permission bits"),
        (["--mode", "17777"], "--mode wants octal permission bits"),
        (["--mode", "600", "--in-place"], "a mode cannot be set when writing in place"),
    ],
)
def test_bad_mode_exits_2(capsys, sock, work, options, message):
    local = work / "local"
    local.write_bytes(b"x")
    guest = work / "guest"
    code, out, err = run(
        capsys, "agent", "--socket", sock, "copy-to", *options, str(local), str(guest)
    )
    assert (code, out) == (2, "")
    assert message in error_line(err)
    assert not guest.exists()


def test_copy_from_refuses_a_fifo_and_writes_through_a_symlink(capsys, sock, work):
    guest = work / "guest"
    guest.write_bytes(b"guest data")
    fifo = work / "fifo"
    os.mkfifo(fifo)
    code, out, err = run(capsys, "agent", "--socket", sock, "copy-from", str(guest), str(fifo))
    assert (code, out) == (2, "")
    line = error_line(err)
    assert f"cannot write {fifo}: it is a FIFO" in line and "give -" in line, line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)

    real, link = work / "real", work / "link"
    real.write_bytes(b"old")
    link.symlink_to(real)
    code, out, err = run(capsys, "agent", "--socket", sock, "copy-from", str(guest), str(link))
    assert (code, out, err) == (0, "copied 10 bytes\n", "")
    assert link.is_symlink() and real.read_bytes() == b"guest data"
    assert names(work) == ["fifo", "guest", "link", "real"]  # no temporary file left


def test_dash_is_stdout_for_copy_from_and_stdin_for_copy_to(sock, work):
    data = os.urandom(200_000)
    guest = work / "guest"
    proc = gagent("agent", "--socket", sock, "copy-to", "--in-place", "-", str(guest), input=data)
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
    assert guest.read_bytes() == data
    proc = gagent("agent", "--socket", sock, "copy-from", str(guest), "-")
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
    assert proc.stdout == data  # the file alone: no "copied N bytes" mixed in
    assert names(work) == ["guest"]  # no file named '-'


def test_local_write_errors_are_one_line(sock, work):
    guest = work / "guest"
    guest.write_bytes(os.urandom(300_000))
    with open("/dev/full", "wb") as full:
        proc = gagent("agent", "--socket", sock, "copy-from", str(guest), "-", stdout=full)
    assert proc.returncode == 1
    assert error_line(proc.stderr.decode()) == (
        "gagent: error: cannot write <stdout>: No space left on device"
    )

    # a file size limit (EFBIG; Python ignores SIGXFSZ): the old LOCAL stays whole
    local = work / "local"
    local.write_bytes(b"old content")

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = gagent(
        "agent", "--socket", sock, "copy-from", str(guest), str(local),
        preexec_fn=limit_file_size,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        error_line(proc.stderr.decode()) == f"gagent: error: cannot write {local}: File too large"
    )
    assert local.read_bytes() == b"old content"
    assert names(work) == ["guest", "local"]

"""gagent.host.channel_lock: the lock files that serialize channel edits.

Real flock locks on real files: held by other tasks of this process, by another
process (which is also SIGKILLed to show the kernel drops its lock), waited for
with a bound and given up on cancellation.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio

from gagent.errors import GagentError
from gagent.host.channel_lock import (
    ChannelEditConflict,
    domain_lock_path,
    edit_lock,
    path_lock_path,
    runtime_dir,
)

# A process that holds an flock on argv[1] until killed, and says when it has it.
HOLDER = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "os.ftruncate(fd, 0); os.write(fd, b'%d\\n' % os.getpid())\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private XDG_RUNTIME_DIR: the lock files of this test only."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "gagent"


@pytest.fixture
def holder():
    """Start a real process holding the lock on a path; yields a starter, kills them all."""
    procs: list[subprocess.Popen] = []

    def start(path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# ------------------------------------------------------------- runtime directory


def test_runtime_dir_is_a_private_directory_under_xdg_runtime_dir(runtime):
    assert runtime_dir() == runtime
    info = os.lstat(runtime)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    assert runtime_dir() == runtime  # the second call finds it


@pytest.mark.parametrize("spoil", ["symlink", "shared", "file"])
def test_runtime_dir_skips_a_directory_that_is_not_private(tmp_path, monkeypatch, spoil):
    xdg, tmp = tmp_path / "xdg", tmp_path / "tmp"
    xdg.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    if spoil == "symlink":  # someone's link to their own directory
        (tmp_path / "theirs").mkdir()
        (xdg / "gagent").symlink_to(tmp_path / "theirs")
    elif spoil == "shared":
        (xdg / "gagent").mkdir(mode=0o777)
        os.chmod(xdg / "gagent", 0o777)
    else:
        (xdg / "gagent").write_text("")
    # the next candidate: root's /run/gagent, anyone else's private <tmp>/gagent-UID
    fallback = Path("/run/gagent") if os.geteuid() == 0 else tmp / f"gagent-{os.geteuid()}"
    assert runtime_dir() == fallback
    assert (xdg / "gagent").exists()  # left alone


def test_runtime_dir_ignores_someone_elses_xdg_runtime_dir(tmp_path, monkeypatch):
    """As after 'sudo': the invoking user's XDG_RUNTIME_DIR is not root's to fill."""
    xdg, tmp = tmp_path / "xdg", tmp_path / "tmp"
    xdg.mkdir()
    tmp.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the directory to another user")
    os.chown(xdg, 4242, -1)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert runtime_dir() == Path("/run/gagent")
    assert not (xdg / "gagent").exists()


def test_runtime_dir_without_xdg_runtime_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if os.geteuid() == 0:
        assert str(runtime_dir()) == "/run/gagent"
    else:
        assert runtime_dir() == tmp_path / f"gagent-{os.geteuid()}"


def test_lock_files_are_per_uri_and_domain_and_per_socket_path(runtime):
    uuid1, uuid2 = "0b5e5a70-0000-4000-8000-000000000001", "0b5e5a70-0000-4000-8000-000000000002"
    one = domain_lock_path("qemu:///system", uuid1)
    assert one == domain_lock_path("qemu:///system", uuid1)
    assert one.parent == runtime and uuid1 in one.name
    assert one != domain_lock_path("qemu:///system", uuid2)
    assert one != domain_lock_path("qemu+ssh://kvm2/system", uuid1)
    assert path_lock_path("/run/vm/a.sock") == path_lock_path("/run/vm/./a.sock")
    assert path_lock_path("/run/vm/a.sock") != path_lock_path("/run/vm/b.sock")


# -------------------------------------------------------------------- exclusion


async def test_tasks_of_one_process_exclude_each_other(runtime):
    lock = domain_lock_path("test:///default", "11111111-2222-4333-8444-555555555555")
    inside = 0
    most = 0
    entered: list[int] = []

    async def edit(i: int) -> None:
        nonlocal inside, most
        async with edit_lock(lock, what="the test domain", wait=30):
            inside += 1
            most = max(most, inside)
            entered.append(i)
            await trio.sleep(0.01)  # other tasks run now, and must stay out
            inside -= 1

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(edit, i)
    assert most == 1
    assert sorted(entered) == list(range(8))


async def test_lock_held_by_another_process_is_waited_for_then_refused(runtime, holder):
    lock = domain_lock_path("test:///default", "11111111-2222-4333-8444-555555555555")
    proc = holder(lock)
    start = trio.current_time()
    with trio.fail_after(30), pytest.raises(ChannelEditConflict) as info:
        async with edit_lock(lock, what="the channels of vm1", wait=0.3):
            pytest.fail("entered a lock another process holds")
    assert trio.current_time() - start >= 0.3  # it did wait
    message = str(info.value)
    assert message == (
        f"another gagent (PID {proc.pid}) has been changing the channels of vm1 for over 0.3s "
        f"(lock {lock}): wait for it to finish, then run the command again"
    )
    assert isinstance(info.value, GagentError)


async def test_lock_of_a_killed_holder_is_free(runtime, holder):
    lock = path_lock_path("/run/vm/a.sock")
    proc = holder(lock)
    got = False

    async def take() -> None:
        nonlocal got
        async with edit_lock(lock, what="a.sock", wait=60):
            got = True

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(take)
            await trio.sleep(0.2)
            assert not got  # still held
            os.kill(proc.pid, signal.SIGKILL)
    assert got
    # and the new holder wrote its own PID for the next waiter's message
    assert lock.read_text() == f"{os.getpid()}\n"


async def test_waiting_for_the_lock_ends_on_cancellation(runtime, holder):
    lock = domain_lock_path("test:///default", "11111111-2222-4333-8444-555555555555")
    holder(lock)
    with trio.fail_after(30):
        with trio.move_on_after(0.2) as scope:
            async with edit_lock(lock, what="vm1", wait=600):
                pytest.fail("entered a lock another process holds")
    assert scope.cancelled_caught  # the 600 s wait gave way to the caller's deadline


async def test_lock_is_released_when_the_block_raises(runtime):
    lock = domain_lock_path("test:///default", "11111111-2222-4333-8444-555555555555")
    with pytest.raises(RuntimeError):
        async with edit_lock(lock, what="vm1", wait=1):
            raise RuntimeError("edit failed")
    with trio.fail_after(10):
        async with edit_lock(lock, what="vm1", wait=1):
            pass


async def test_unusable_lock_file_is_one_gagent_error(runtime):
    runtime_dir()
    target = runtime / "elsewhere"
    target.write_text("")
    link = runtime / "link.lock"
    link.symlink_to(target)  # O_NOFOLLOW: a planted symlink is not followed
    with pytest.raises(GagentError) as info:
        async with edit_lock(link, what="vm1", wait=1):
            pass
    assert str(info.value).startswith(f"cannot open the lock file {link} (")
    assert str(info.value).endswith("set XDG_RUNTIME_DIR to a directory of your own")

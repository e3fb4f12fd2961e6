"""A channel's --path is refused unless it is free for this channel (gagent.host.channel_guard).

Against libvirt's test driver (test:///default, own domains) and real files and
sockets in a temporary directory: every refusal leaves the domain's
definition, and the file at the path, as they were.
"""

from __future__ import annotations

import os
import socket

import pytest
import trio
from libvirt_domains import xmls

from gagent.errors import UsageError
from gagent.host.channel import GAGENT_CHANNEL, ChannelSpec, find_channel
from gagent.host.channel_guard import SocketPathRefused, check_socket_path, path_claims
from gagent.host.channel_ops import add_to_domain
from gagent.host.virt import DEFAULT_URI, open_hypervisor

TIMEOUT = 10
CHOOSE = "choose another path, or leave --path out to let libvirt choose one"


@pytest.fixture
async def hv():
    hypervisor = await open_hypervisor(DEFAULT_URI)
    yield hypervisor
    await hypervisor.close()


@pytest.fixture(autouse=True)
def private_locks(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))


def unix_device(tag: str, path: str, name: str | None = None) -> str:
    target = f"<target type='virtio' name='{name}'/>" if name else "<target port='0'/>"
    return f"    <{tag} type='unix'><source mode='bind' path='{path}'/>{target}</{tag}>\n"


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


async def refused(hv, conn, name: str, spec: ChannelSpec) -> str:
    """add_to_domain must refuse ``spec`` with SocketPathRefused and change nothing."""
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT), pytest.raises(SocketPathRefused) as info:
        await add_to_domain(await hv.lookup(name), spec)
    assert xmls(conn, name) == before
    assert isinstance(info.value, UsageError)  # exit 2 in the CLI
    assert info.value.path == spec.path
    return one_line(info.value)


# ------------------------------------------------------------- the file at --path


async def test_existing_regular_file_is_refused_and_kept(conn, hv, make_domain, tmp_path):
    name = make_domain()
    path = tmp_path / "precious.conf"
    path.write_text("keep me\n")
    message = await refused(hv, conn, name, ChannelSpec(path=str(path)))
    assert message == (
        f"socket path {path} is an existing regular file, not a socket: QEMU would delete it "
        f"to make its socket; {CHOOSE}"
    )
    assert path.read_text() == "keep me\n"


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "FIFO"])
async def test_anything_else_that_is_not_a_socket_is_refused(conn, hv, make_domain, tmp_path, kind):
    name = make_domain(start=False)
    path = tmp_path / "thing"
    if kind == "FIFO":
        os.mkfifo(path)
    else:
        target = tmp_path / "target"
        if kind == "symlink":
            target.write_text("")
        path.symlink_to(target)
    message = await refused(hv, conn, name, ChannelSpec(path=str(path)))
    assert f"is an existing {kind.split()[-1]}, not a socket" in message


async def test_socket_someone_listens_on_is_refused(conn, hv, make_domain, tmp_path):
    name = make_domain()
    path = str(tmp_path / "busy.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        message = await refused(hv, conn, name, ChannelSpec(path=path))
        assert message == (
            f"something is listening on socket {path} and no domain on {DEFAULT_URI} uses it "
            f"(another program, or a domain of another libvirt connection); {CHOOSE}"
        )
        assert (tmp_path / "busy.sock").is_socket()  # and left alone


async def test_leftover_socket_no_domain_uses_is_refused_with_the_way_out(
    conn, hv, make_domain, tmp_path
):
    name = make_domain()
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)  # closed without unlinking: what a killed QEMU leaves
    message = await refused(hv, conn, name, ChannelSpec(path=path))
    assert f"socket path {path} is a leftover socket nothing listens on" in message
    assert f"remove it (rm {path}) and run the command again" in message
    os.unlink(path)  # the way out, taken
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(path=path))
    assert result.changed


async def test_stale_socket_of_this_very_channel_is_accepted(conn, hv, make_domain, tmp_path):
    path = str(tmp_path / "mine.sock")
    name = make_domain(unix_device("channel", path, GAGENT_CHANNEL), start=False)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(path=path))
    assert not result.changed
    assert str(result) == f"channel {GAGENT_CHANNEL} is already present in the definition"


async def test_a_path_that_does_not_exist_is_accepted(conn, hv, make_domain, tmp_path):
    name = make_domain(start=False)
    path = str(tmp_path / "new.sock")
    with trio.fail_after(TIMEOUT):
        result = await add_to_domain(await hv.lookup(name), ChannelSpec(path=path))
    assert result.changed
    assert find_channel(xmls(conn, name)[1], GAGENT_CHANNEL).path == path


# ------------------------------------------------------ paths other domains use


@pytest.mark.parametrize(
    ("device", "running"),
    [("channel", True), ("channel", False), ("serial", True), ("console", False)],
)
async def test_path_another_domain_uses_is_refused(
    conn, hv, make_domain, tmp_path, device, running
):
    path = str(tmp_path / "other.sock")
    channel_name = GAGENT_CHANNEL if device == "channel" else None
    other = make_domain(unix_device(device, path, channel_name), start=running)
    name = make_domain()
    message = await refused(hv, conn, name, ChannelSpec("org.gagent.hijack.0", path))
    # libvirt turns a lone <console> into serial port 0 with a console on it: the
    # serial, listed first, is the claim named
    use = f"channel {GAGENT_CHANNEL}" if device == "channel" else "serial"
    where = "running" if running else "defined"
    assert message == (
        f"socket path {path} is already used by domain {other} ({use}, {where}): a socket "
        f"serves one domain, and gagent would reach {other}'s guest through it; {CHOOSE}"
    )


async def test_another_domains_path_is_found_however_it_is_spelled(conn, hv, make_domain, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    other = make_domain(unix_device("channel", str(tmp_path / "real" / "a.sock"), "x.0"))
    name = make_domain()
    for spelling in (tmp_path / "alias" / "a.sock", f"{tmp_path}/real/./a.sock"):
        message = await refused(hv, conn, name, ChannelSpec(path=str(spelling)))
        assert f"is already used by domain {other} (channel x.0, running)" in message


async def test_another_domains_claim_is_named_before_a_missing_directory(
    conn, hv, make_domain, tmp_path
):
    """As for a path libvirt chose in its own directories (or in another mount namespace)."""
    path = str(tmp_path / "not-here" / "agent.sock")
    other = make_domain(unix_device("channel", path, "x.0"))
    name = make_domain()
    message = await refused(hv, conn, name, ChannelSpec(path=path))
    assert f"is already used by domain {other} (channel x.0, running)" in message
    before = xmls(conn, name)
    with trio.fail_after(TIMEOUT), pytest.raises(UsageError, match="does not exist: create it"):
        await add_to_domain(await hv.lookup(name), ChannelSpec(path=path + ".2"))
    assert xmls(conn, name) == before


async def test_path_only_in_another_domains_running_xml_is_refused(conn, hv, make_domain, tmp_path):
    """A transient domain has no definition: its running XML alone claims the path."""
    path = str(tmp_path / "transient.sock")
    other = make_domain(unix_device("channel", path, GAGENT_CHANNEL), persistent=False)
    name = make_domain(start=False)
    message = await refused(hv, conn, name, ChannelSpec(path=path))
    assert f"already used by domain {other} (channel {GAGENT_CHANNEL}, running)" in message


async def test_path_this_domain_uses_for_another_device_is_refused(conn, hv, make_domain, tmp_path):
    path = str(tmp_path / "serial.sock")
    name = make_domain(unix_device("serial", path))
    message = await refused(hv, conn, name, ChannelSpec(path=path))
    assert message == (
        f"socket path {path} is already used by serial of domain {name} (running); {CHOOSE}"
    )


async def test_path_claims_lists_every_claim(conn, hv, make_domain, tmp_path):
    path = str(tmp_path / "shared.sock")
    first = make_domain(unix_device("channel", path, "a.0"))
    second = make_domain(unix_device("serial", path), start=False)
    make_domain(unix_device("channel", str(tmp_path / "unrelated.sock"), "b.0"))
    with trio.fail_after(TIMEOUT):
        claims = await path_claims(await hv.lookup(first), path, local=True)
    found = sorted((c.domain, str(c.use), c.where()) for c in claims)
    assert found == sorted(
        [(first, "channel a.0", "running"), (first, "channel a.0", "defined"),
         (second, "serial", "defined"), (second, "console", "defined")]
    )  # fmt: skip


# ------------------------------------------------------------- remote connections


async def test_remote_connection_checks_the_domains_and_says_the_file_was_not(
    conn, hv, make_domain, tmp_path
):
    """On a remote URI the path is on the libvirt host: only the XML can be checked."""
    name = make_domain()
    here = tmp_path / "file-here"
    here.write_text("")  # would be refused locally; remotely it is not ours to see
    domain = await hv.lookup(name)
    with trio.fail_after(TIMEOUT):
        notes = await check_socket_path(domain, ChannelSpec(path=str(here)), local=False)
    assert notes == [
        f"socket path {here} was checked against the domains of {DEFAULT_URI} only: it is on "
        "the libvirt host, so whether a file is there was not checked"
    ]
    other_path = str(tmp_path / "theirs.sock")
    other = make_domain(unix_device("channel", other_path, GAGENT_CHANNEL))
    with trio.fail_after(TIMEOUT), pytest.raises(SocketPathRefused, match=f"domain {other}"):
        await check_socket_path(domain, ChannelSpec(path=other_path), local=False)

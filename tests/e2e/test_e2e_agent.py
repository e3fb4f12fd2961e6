"""The shared guest through gagent's socket route: queries, file copies, exec."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import trio

from gagent.client import Agent
from gagent.fs_types import FsfreezeStatus
from gagent.host.session import open_domain_agent
from gagent.programs import run_program
from gagent.transfer import copy_from_guest, copy_to_guest

pytestmark = pytest.mark.e2e


async def test_queries_by_domain_name(main_domain, guest_kernel_release):
    with trio.fail_after(60):
        async with open_domain_agent(main_domain.name, uri=main_domain.uri) as agent:
            # auto picked gagent's own channel: a socket client on the path we gave
            assert isinstance(agent, Agent)
            assert str(main_domain.socket_path) in agent.name
            await agent.ping()

            info = await agent.info()
            assert info.version.startswith("7.2."), info.version
            assert info.commands["guest-exec"].enabled

            osinfo = await agent.osinfo()
            assert osinfo.kernel_release == guest_kernel_release
            assert osinfo.machine == "x86_64"
            assert osinfo.id == "gagent-e2e"

            assert await agent.host_name() == main_domain.hostname

            interfaces = {i.name: i for i in await agent.network_interfaces()}
            assert "lo" in interfaces, interfaces
            assert any(a.address == "127.0.0.1" for a in interfaces["lo"].ip_addresses)

            data = [fs for fs in await agent.fsinfo() if fs.mountpoint == "/data"]
            assert len(data) == 1, await agent.fsinfo()
            assert data[0].type == "ext4"
            assert data[0].total_bytes and data[0].total_bytes > 0
            assert data[0].used_bytes is not None and data[0].used_bytes <= data[0].total_bytes
            assert [d.dev for d in data[0].disks] == ["/dev/vda"]

            disks = {d.name: d for d in await agent.disks()}
            assert "/dev/vda" in disks, disks
            assert not disks["/dev/vda"].partition

            assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
            # the guest clock comes from the RTC libvirt set from the host's (UTC)
            assert abs(await agent.time() / 1e9 - time.time()) < 600


async def test_reach_by_uuid_and_id(main_domain):
    dom = main_domain.dom
    with trio.fail_after(30):
        for ref in (dom.UUIDString(), str(dom.ID())):
            async with open_domain_agent(ref, uri=main_domain.uri) as agent:
                assert main_domain.name in agent.name
                assert await agent.host_name() == main_domain.hostname


async def test_copy_in_and_out(main_domain, tmp_path):
    size = 3 * 1024 * 1024 + 12345  # a few MiB, not a multiple of the chunk size
    payload = os.urandom(size)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    back = tmp_path / "back.bin"
    guest_path = "/data/e2e-copy.bin"
    digest = hashlib.sha256(payload).hexdigest()
    with trio.fail_after(120):
        async with open_domain_agent(main_domain.name, uri=main_domain.uri) as agent:
            assert await copy_to_guest(agent, source, guest_path) == size
            # the guest itself agrees on the content
            result = await run_program(agent, ["/bin/sha256sum", guest_path])
            assert result.exit_code == 0, result
            assert result.stdout.split()[0].decode() == digest
            assert await copy_from_guest(agent, guest_path, back) == size
            assert (await run_program(agent, ["/bin/rm", guest_path])).succeeded
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert not list(tmp_path.glob(".back.bin.*")), "temporary file left behind"


async def test_exec_output_and_exit_code(main_domain):
    with trio.fail_after(60):
        async with open_domain_agent(main_domain.name, uri=main_domain.uri) as agent:
            result = await run_program(agent, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
            assert (result.exit_code, result.signal) == (3, None)
            assert result.stdout == b"out\n"
            assert result.stderr == b"err\n"
            assert not result.succeeded

            fed = await run_program(agent, ["/bin/cat"], input=b"fed through stdin\n")
            assert fed.succeeded and fed.stdout == b"fed through stdin\n"

            killed = await run_program(agent, ["/bin/sh", "-c", "kill -TERM $$"])
            assert (killed.exit_code, killed.signal) == (None, 15), killed

            env = await run_program(agent, ["/bin/sh", "-c", "echo $E2E"], env={"E2E": "yes"})
            assert env.stdout == b"yes\n"


async def test_exec_output_past_the_default_reply_bound(main_domain):
    # qemu-ga keeps 16 MiB of stdout and 16 MiB of stderr: its guest-exec-status
    # reply (~43 MiB of base64) is larger than the client's default bound.
    script = "head -c 17000000 /dev/zero; head -c 17000000 /dev/zero | tr '\\0' e >&2"
    with trio.fail_after(300):
        async with open_domain_agent(main_domain.name, uri=main_domain.uri) as agent:
            assert isinstance(agent, Agent)
            result = await run_program(agent, ["/bin/sh", "-c", script])
            assert result.succeeded, (result.exit_code, result.signal)
            assert result.stdout == b"\0" * (16 << 20) and result.stdout_truncated
            assert result.stderr == b"e" * (16 << 20) and result.stderr_truncated
            assert await agent.host_name() == main_domain.hostname  # the stream is still in step

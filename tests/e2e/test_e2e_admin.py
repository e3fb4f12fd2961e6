"""``gagent agent DOMAIN passwd|fstrim|timezone|vcpus|shutdown|reboot|halt`` and
``call REQUEST`` in a real guest, as an operator runs them (the installed ``gagent``
on gagent's channel), each checked from inside the guest through libvirt's channel.

The changes run on short-lived guests (``doomed_domain``: a password, the power
modes); the shared guest serves what it gets back to as it was (its two vCPUs,
read-only queries).  Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import shlex
import sys
from pathlib import Path

import pytest
import trio

from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

GAGENT = Path(sys.executable).with_name("gagent")
#: One command, a busy TCG guest included.
COMMAND_WITHIN = 120
#: From guest-shutdown to the guest's init saying so (its shim forces it after 10 s).
GOING_DOWN_WITHIN = 120
PASSWORD = "e2e Pa55word: not argv"

#: The e2e guest's busybox has no chpasswd(8), which guest-set-user-password runs
#: ("USER:PASSWORD" lines on its stdin): this stand-in hashes with busybox's
#: mkpasswd and writes /etc/shadow as chpasswd would.
CHPASSWD = b"""#!/bin/sh
set -eu
while IFS= read -r line || [ -n "$line" ]; do
    user=${line%%:*}
    secret=${line#*:}
    if [ "${1:-}" = -e ]; then
        hash=$secret
    else
        hash=$(printf '%s\\n' "$secret" | mkpasswd -m sha512 -P 0)
    fi
    awk -F: -v OFS=: -v u="$user" -v h="$hash" \\
        '$1 == u { $2 = h; found = 1 } { print } END { exit !found }' \\
        /etc/shadow >/etc/shadow.new
    chmod 600 /etc/shadow.new
    mv /etc/shadow.new /etc/shadow
done
"""


async def gagent(
    domain, *argv: str, stdin: bytes | None = None, before: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    """``gagent BEFORE... agent DOMAIN -c URI ARGV...`` (stdin not a terminal):
    (rc, stdout, stderr)."""
    command = [str(GAGENT), *before, "agent", domain.name, "-c", domain.uri, *argv]
    with trio.fail_after(COMMAND_WITHIN):
        proc = await trio.run_process(
            command, stdin=stdin or b"", capture_stdout=True, capture_stderr=True, check=False
        )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def checker(domain):
    """The tests' own look inside the guest: libvirt's channel (the CLI uses ours)."""
    return open_domain_agent(domain.name, uri=domain.uri, transport="libvirt")


async def guest_output(domain, argv: list[str], input: bytes | None = None) -> str:
    with trio.fail_after(COMMAND_WITHIN):
        async with checker(domain) as agent:
            result = await run_program(agent, argv, input=input)
    assert result.succeeded, result
    return result.stdout.decode()


async def root_hash(domain) -> str:
    shadow = await guest_output(domain, ["/bin/cat", "/etc/shadow"])
    [line] = [line for line in shadow.splitlines() if line.startswith("root:")]
    return line.split(":")[1]


async def on_the_console(domain, text: str) -> None:
    """Wait until the guest's serial console shows ``text`` (its init logs there
    "going down: MODE" when asked to power down, halt or reboot)."""
    with trio.fail_after(GOING_DOWN_WITHIN):
        while text not in domain.serial_log.read_text(errors="replace"):  # noqa: ASYNC110
            await trio.sleep(0.2)  # a file another process writes: polled


async def ended(domain) -> None:
    with trio.fail_after(GOING_DOWN_WITHIN):
        while domain.dom.isActive():  # noqa: ASYNC110 - libvirt's state, polled
            await trio.sleep(0.2)


# ------------------------------------------------------------ the shared guest


async def test_timezone_and_call_request(main_domain):
    rc, out, err = await gagent(main_domain, "timezone")
    assert (rc, err) == (0, "")
    assert out == "UTC (UTC+00:00)\n"  # the guest has no /etc/localtime
    rc, out, err = await gagent(main_domain, "--json", "call", '{"execute": "guest-get-host-name"}')
    assert (rc, err) == (0, "")
    assert '"host-name": "' + main_domain.hostname + '"' in out


async def test_vcpus_set_offlines_and_onlines_in_the_guest(main_domain):
    online_file = ["/bin/cat", "/sys/devices/system/cpu/online"]
    assert (await guest_output(main_domain, online_file)).strip() == "0-1"
    try:
        rc, out, err = await gagent(main_domain, "vcpus", "--set", "1")
        assert (rc, err) == (0, "")
        assert out.splitlines()[-1] == "1 of 2 online"
        assert (await guest_output(main_domain, online_file)).strip() == "0"
        rc, out, err = await gagent(main_domain, "vcpus", "--set", "3")
        assert rc == 2
        grow = ["virsh", "-c", main_domain.uri, "setvcpus", main_domain.name, "3", "--live"]
        assert shlex.join(grow) in err
    finally:
        rc, out, err = await gagent(main_domain, "vcpus", "--set", "2")
    assert (rc, err) == (0, "")
    assert out.splitlines()[-1] == "2 of 2 online"
    assert (await guest_output(main_domain, online_file)).strip() == "0-1"


# ------------------------------------------------------------ doomed guests


async def test_passwd_fstrim_then_shutdown(doomed_domain):
    domain = doomed_domain
    install = "cat >/usr/sbin/chpasswd && chmod 755 /usr/sbin/chpasswd"
    await guest_output(domain, ["/bin/sh", "-c", install], input=CHPASSWD)
    before = await root_hash(domain)
    rc, out, err = await gagent(
        domain, "passwd", "root", "--password-stdin", stdin=PASSWORD.encode() + b"\n",
        before=("-vv",),  # every request logged: the password must not be
    )  # fmt: skip
    assert rc == 0, err
    assert out == f"password of root set in domain {domain.name}\n"
    sent = "-> guest-set-user-password {'username': 'root', 'password': '(redacted)'"
    assert sent in err
    assert PASSWORD not in err
    assert base64.b64encode(PASSWORD.encode()).decode() not in err
    after = await root_hash(domain)
    assert after != before and after.startswith("$"), after
    # the guest's own crypt() agrees that this hash is of that password
    check = "import crypt, sys; h, p = sys.argv[1:]; print(crypt.crypt(p, h) == h)"
    verdict = await guest_output(domain, ["/usr/bin/python3", "-W", "ignore", "-c", check,
                                          after, PASSWORD])  # fmt: skip
    assert verdict.strip() == "True"

    rc, out, err = await gagent(domain, "--json", "fstrim")
    assert (rc, err) == (0, "")
    data = [r for r in json.loads(out) if r["path"] == "/data"]
    assert len(data) == 1 and data[0]["error"] is None, out
    assert data[0]["trimmed"] >= 0
    rc, out, err = await gagent(domain, "--json", "fstrim", "--minimum", "1048576")
    assert (rc, err) == (0, "")
    data = [r for r in json.loads(out) if r["path"] == "/data"]
    assert data and data[0]["minimum"] == 1048576, out

    rc, out, err = await gagent(domain, "shutdown", "--yes")
    assert (rc, err) == (0, "")
    assert out == f"asked domain {domain.name} to power down\n"
    await on_the_console(domain, "going down: poweroff")
    await ended(domain)


async def test_reboot(doomed_domain):
    rc, out, err = await gagent(doomed_domain, "reboot", "-y")
    assert (rc, err) == (0, "")
    assert out == f"asked domain {doomed_domain.name} to reboot\n"
    await on_the_console(doomed_domain, "going down: reboot")
    await ended(doomed_domain)  # the e2e domains' on_reboot is destroy


async def test_halt_leaves_the_domain_running_without_its_agent(doomed_domain):
    rc, out, err = await gagent(doomed_domain, "--transport", "libvirt", "halt", "--yes")
    assert out == f"asked domain {doomed_domain.name} to halt\n"
    assert (rc, err) == (0, "")
    await on_the_console(doomed_domain, "going down: halt")
    await on_the_console(doomed_domain, "System halted")  # the kernel's last word
    rc, _, err = await gagent(doomed_domain, "--timeout", "5", "ping")
    assert rc in (3, 4), err  # nobody answers on the channel any more
    assert doomed_domain.dom.isActive()  # halted, not powered off

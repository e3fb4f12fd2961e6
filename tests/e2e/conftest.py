"""Real-guest end-to-end fixtures: a private libvirtd, the guest image, booted domains.

Everything here is synchronous (plain libvirt-python, subprocess, the
harness's blocking agent client): pytest-trio's trio fixtures live for one
test only, so the session-wide setup runs outside trio, on the main thread
(which the private libvirtd needs, see tests/harness/libvirtd/daemon.py).
The tests themselves are async and drive the guest through gagent.

Session fixtures:

* ``e2e_host``: what the machine must have (root, unshare, libvirtd with its
  QEMU driver, qemu-system-x86_64, qemu-img, apt-get/dpkg-deb for the image).
  Missing pieces skip the e2e tests with the reason, unless ``CI`` or
  ``GAGENT_E2E_REQUIRE=1`` is set: then they fail, so a CI machine can never
  pass by skipping them;
* ``guest_image``: the cached guest image (build time and cache hit recorded);
* ``libvirt_daemon`` / ``libvirt_conn``: the private daemon and one connection;
* ``main_domain``: one guest shared by most tests, with three channels that
  gagent's own ``add_to_domain`` adds before the first boot:
  ``org.gagent.agent.0`` (unix socket under the session's workdir, qemu-ga on
  it), ``org.qemu.guest_agent.0`` (libvirt-owned, qemu-ga on it too) and
  ``org.gagent.idle.0`` (socket, but nothing in the guest opens it).

``guest_deb``, ``systemd_image`` and ``systemd_domain`` are the packaging's
proof: the .deb from scripts/build-packages.sh installed with ``dpkg -i`` into
a stock Debian systemd guest (harness/image/systemd_image.py), booted with our
socket channel and libvirt's, each served by qemu-ga through udev and systemd
alone.

After each test on ``main_domain``, its agents must answer on their routes again
(guest_health.py, bounded): a test that left them down fails at teardown with
what was found, and the guest is repaired, so one broken test cannot fail the
ones after it on the shared guest.

Per-test fixtures: ``doomed_domain`` (booted, for a test that destroys it),
``doomed_domains`` (a factory of several) and ``shut_off_domain`` (defined, never
started).  The e2e tests are moved to the end of the run, so the session fixtures end
with them.

Ready means: the live XML shows every served channel ``state='connected'``,
then the agent on our socket answers guest-sync-delimited.  Every wait is
bounded and a failed boot reports the tails of the guest's serial console and
of libvirt's log of the domain.  Teardown (also after failures): destroy and
undefine each domain, close the connection, stop the daemon by PID.

Timings (image build, daemon start, boot to agent, teardown) are printed in
a "gagent e2e" section of the terminal summary and written to
``<workdir>/timings.json``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest
import trio
from guest_health import SERVING_BOUND, repair, wait_serving
from harness.image.boot import AgentConnection, AgentTimeout, domain_xml
from harness.image.build import BuildError, GuestImage, build_image, repo_python_trees
from harness.image.systemd_image import SystemdImage, build_systemd_image, root_overlay
from harness.libvirtd.daemon import LibvirtDaemon, LibvirtdError, running_libvirtd

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL, ChannelSpec
from gagent.host.channel_ops import add_to_domain
from gagent.host.virt import open_hypervisor

REPO = Path(__file__).resolve().parents[2]
#: A channel gagent adds but no agent in the guest opens (its state stays 'disconnected').
IDLE_CHANNEL = "org.gagent.idle.0"
MAIN_DOMAIN = "gagent-e2e-main"
MAIN_HOSTNAME = "e2e-main-guest"
SYSTEMD_DOMAIN = "gagent-e2e-systemd"
SYSTEMD_HOSTNAME = "e2e-systemd-guest"
#: Bounds for booting: normally ~6 s to a connected channel under TCG.
CHANNEL_TIMEOUT = 120.0
SYNC_TIMEOUT = 30.0
_UNIX_PATH_MAX = 107

#: name -> seconds (or a short string), shown in the terminal summary.
TIMINGS: dict[str, object] = {}
_STAGE_START: list[float] = []


def record(key: str, value: object) -> None:
    TIMINGS[key] = round(value, 2) if isinstance(value, float) else value


# ------------------------------------------------------------------ the host


def _missing_requirements() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the private libvirtd mounts things in its own namespace)")
    tools = ("qemu-system-x86_64", "qemu-img", "unshare", "apt-get", "dpkg-deb", "mke2fs",
             "debootstrap", "chroot")  # fmt: skip
    for tool in tools:
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            missing.append(tool)
    if not os.access("/usr/sbin/libvirtd", os.X_OK):
        missing.append("/usr/sbin/libvirtd (libvirt-daemon)")
    if not glob.glob("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"):
        missing.append("libvirt's QEMU driver (libvirt-daemon-driver-qemu)")
    if not missing:
        try:
            probe = subprocess.run(
                ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            missing.append("a working 'unshare --mount --pid' (it hung)")
        else:
            if probe.returncode != 0:
                missing.append(
                    "privileges for 'unshare --mount --pid --fork --mount-proc': "
                    + (probe.stderr.strip() or f"exit {probe.returncode}")
                )
    return missing


def _must_run() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("GAGENT_E2E_REQUIRE") == "1"


@pytest.fixture(scope="session")
def e2e_host() -> None:
    """Skip (or, on CI / with GAGENT_E2E_REQUIRE=1, fail) when the machine cannot boot guests."""
    missing = _missing_requirements()
    if missing:
        reason = "e2e: this machine lacks " + "; ".join(missing)
        if _must_run():
            pytest.fail(reason + " (CI or GAGENT_E2E_REQUIRE=1 is set: not skipping)")
        pytest.skip(reason)
    _STAGE_START.append(time.monotonic())


@pytest.fixture(scope="session")
def e2e_workdir(e2e_host, tmp_path_factory) -> Iterator[Path]:
    """Session workdir (kept by pytest for inspection); short enough for socket paths."""
    path = tmp_path_factory.mktemp("e2e")
    own = None
    # <workdir>/lv/run/libvirt-admin-sock is the longest socket path we make.
    if len(os.fsencode(path / "lv" / "run" / "libvirt-admin-sock")) > _UNIX_PATH_MAX - 4:
        path = own = Path(tempfile.mkdtemp(prefix="gagent-e2e-"))
    yield path
    try:
        (path / "timings.json").write_text(json.dumps(TIMINGS, indent=1) + "\n")
    except OSError:
        pass
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)


# ------------------------------------------------------------------ image, daemon


def kernel_release_of(image: GuestImage) -> str:
    """The guest kernel's release, from the image's cache manifests."""
    entry = Path(image.kernel).parent
    manifest = json.loads((entry / "manifest.json").read_text())
    if "kernel_release" not in manifest:  # an image entry: the base has it
        manifest = json.loads((entry.parent / manifest["base"] / "manifest.json").read_text())
    return manifest["kernel_release"]


@pytest.fixture(scope="session")
def guest_image(e2e_host) -> GuestImage:
    try:
        image = build_image(extra_python_trees=repo_python_trees())
    except BuildError as exc:
        pytest.fail(f"e2e: the guest image could not be built: {exc}")
    record("image_build_s", image.build_seconds)
    record("image_cached", image.cached)
    print(
        f"e2e: guest image {'cached' if image.cached else 'built'} in {image.build_seconds:.2f} s"
    )
    return image


@pytest.fixture(scope="session")
def guest_kernel_release(guest_image) -> str:
    return kernel_release_of(guest_image)


@pytest.fixture(scope="session")
def libvirt_daemon(e2e_workdir) -> Iterator[LibvirtDaemon]:
    try:
        cm = running_libvirtd(e2e_workdir / "lv")
        daemon = cm.__enter__()
    except LibvirtdError as exc:
        pytest.fail(f"e2e: the private libvirtd did not start: {exc}")
    record("daemon_ready_s", daemon.timings["ready"])
    try:
        yield daemon
    finally:
        cm.__exit__(None, None, None)
        record("daemon_stop_s", daemon.timings.get("stop", -1.0))
        left = daemon.processes()
        if left:
            record("daemon_leftovers", str(left))
        if _STAGE_START:
            record("e2e_stage_s", time.monotonic() - _STAGE_START[0])


@pytest.fixture(scope="session")
def libvirt_conn(libvirt_daemon) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(libvirt_daemon.uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


# ------------------------------------------------------------------ domains


@dataclass
class E2EDomain:
    """A defined (and usually running) e2e domain."""

    name: str
    hostname: str
    dom: libvirt.virDomain
    uri: str
    workdir: Path
    serial_log: Path
    qemu_log: Path
    data_disk: Path
    sockets: dict[str, Path] = field(default_factory=dict)  # gagent socket channels
    served: tuple[str, ...] = ()  # ports qemu-ga runs on in the guest
    boot_seconds: float | None = None

    @property
    def socket_path(self) -> Path:
        return self.sockets[GAGENT_CHANNEL]

    def channel_states(self) -> dict[str, str | None]:
        """Channel name -> state ('connected', 'disconnected') from the live XML."""
        return {name: ch.get("state") for name, ch in xml_channels(self.dom.XMLDesc(0)).items()}

    async def wait_channel_state(self, channel: str, state: str | None) -> None:
        """Poll the live XML until ``channel`` is in ``state`` (bound it with fail_after)."""
        while True:
            if self.channel_states().get(channel) == state:
                return
            await trio.sleep(0.1)

    def tails(self, lines: int = 40) -> str:
        return (
            f"--- guest serial console ({self.serial_log}), last {lines} lines:\n"
            f"{_tail(self.serial_log, lines)}\n"
            f"--- libvirt's log of the domain ({self.qemu_log}):\n{_tail(self.qemu_log, 15)}"
        )


class E2EBootError(RuntimeError):
    """A domain did not come up (the message carries the guest's console)."""


def xml_channels(xml: str) -> dict[str, dict[str, str | None]]:
    """Virtio channels of a domain XML: name -> {type, path, mode, state}.

    Parsed here, independently of gagent.host.channel (the code under test)."""
    found: dict[str, dict[str, str | None]] = {}
    for ch in ET.fromstring(xml).iter("channel"):
        target, source = ch.find("target"), ch.find("source")
        if target is None or target.get("type") != "virtio" or not target.get("name"):
            continue
        found[target.get("name", "")] = {
            "type": ch.get("type"),
            "path": source.get("path") if source is not None else None,
            "mode": source.get("mode") if source is not None else None,
            "state": target.get("state"),
        }
    return found


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(missing)"


def define_domain(
    conn: libvirt.virConnect,
    daemon: LibvirtDaemon,
    image: GuestImage,
    workdir: Path,
    name: str,
    *,
    hostname: str | None = None,
    socket_channels: Sequence[str] = (GAGENT_CHANNEL,),
    libvirt_channel: bool = True,
    served: Sequence[str] | None = None,
    memory_mib: int = 512,
    vcpus: int = 2,
    extra_cmdline: str = "",
    make_disk: Callable[[Path], tuple[Path, str]] | None = None,
) -> E2EDomain:
    """Define ``name`` (not started); gagent's add_to_domain adds its channels.

    ``socket_channels`` get a unix socket under ``workdir``; ``libvirt_channel``
    adds libvirt's own org.qemu.guest_agent.0; ``served`` (default: all of
    them) goes to the kernel command line, so the guest runs qemu-ga there.
    ``make_disk(workdir)`` makes the domain's first disk and returns (path,
    format); by default it is a copy of the image's data disk template.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    sockdir = workdir / "s"
    sockdir.mkdir(exist_ok=True)
    sockets = {ch: sockdir / f"{i}.sock" for i, ch in enumerate(socket_channels)}
    for path in sockets.values():
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise E2EBootError(f"socket path {path} is too long for AF_UNIX")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    all_channels = [*socket_channels, *([LIBVIRT_AGENT_CHANNEL] if libvirt_channel else [])]
    served = tuple(all_channels if served is None else served)
    if make_disk is None:
        disk, disk_format = workdir / "data.ext4", "raw"
        shutil.copyfile(image.data_disk_template, disk)
    else:
        disk, disk_format = make_disk(workdir)
    serial_log = workdir / "serial.log"
    xml = domain_xml(
        image,
        name,
        disk,
        serial_log,
        ports=served,
        hostname=hostname or name,
        memory_mib=memory_mib,
        vcpus=vcpus,
        extra_cmdline=extra_cmdline,
        disk_format=disk_format,
    )
    conn.defineXML(xml)

    async def add_channels() -> None:
        hv = await open_hypervisor(daemon.uri)
        try:
            domain = await hv.lookup(name)
            for ch, path in sockets.items():
                await add_to_domain(domain, ChannelSpec(ch, str(path)))
            if libvirt_channel:
                await add_to_domain(
                    domain, ChannelSpec(LIBVIRT_AGENT_CHANNEL), libvirt_managed=True
                )
        finally:
            await hv.close()

    dom = conn.lookupByName(name)
    try:
        trio.run(add_channels)
        # gagent's edit must be in the persistent definition, as asked.
        defined = xml_channels(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        for ch, path in sockets.items():
            if ch not in defined or defined[ch].get("path") != str(path):
                raise E2EBootError(f"add_to_domain did not define channel {ch} at {path}")
        if libvirt_channel and LIBVIRT_AGENT_CHANNEL not in defined:
            raise E2EBootError(f"add_to_domain did not define {LIBVIRT_AGENT_CHANNEL}")
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
        raise
    return E2EDomain(
        name=name,
        hostname=hostname or name,
        dom=dom,
        uri=daemon.uri,
        workdir=workdir,
        serial_log=serial_log,
        qemu_log=daemon.domain_log_dir / f"{name}.log",
        data_disk=disk,
        sockets=sockets,
        served=served,
    )


def start_and_wait(domain: E2EDomain, timeout: float = CHANNEL_TIMEOUT) -> float:
    """Start the domain; return seconds until every served channel is connected and
    the agent on our socket answers guest-sync-delimited."""
    t0 = time.monotonic()
    domain.dom.create()
    deadline = t0 + timeout
    states: dict[str | None, str | None] = {}
    while True:
        if not domain.dom.isActive():
            raise E2EBootError(f"domain {domain.name} stopped while booting\n{domain.tails()}")
        states = domain.channel_states()
        if all(states.get(ch) == "connected" for ch in domain.served):
            break
        if time.monotonic() > deadline:
            raise E2EBootError(
                f"domain {domain.name}: channels {list(domain.served)} not all connected "
                f"after {timeout:.0f} s (states {states})\n{domain.tails()}"
            )
        time.sleep(0.1)
    if GAGENT_CHANNEL in domain.served and GAGENT_CHANNEL in domain.sockets:
        try:
            with AgentConnection(domain.socket_path) as agent:
                agent.sync(timeout=SYNC_TIMEOUT, attempt=1.0)
        except (AgentTimeout, OSError) as exc:
            raise E2EBootError(
                f"domain {domain.name}: channel connected but the agent on "
                f"{domain.socket_path} did not answer guest-sync-delimited within "
                f"{SYNC_TIMEOUT:.0f} s ({exc})\n{domain.tails()}"
            ) from None
    domain.boot_seconds = time.monotonic() - t0
    return domain.boot_seconds


_UNDEFINE_ALL = (
    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
)


def remove_domain(domain: E2EDomain) -> None:
    """Destroy (if running) and undefine, with whatever snapshot metadata a test left;
    never raises (a failure is listed in the summary: the daemon's stop ends it all)."""
    problems = []
    try:
        if domain.dom.isActive():
            domain.dom.destroy()
    except libvirt.libvirtError as exc:
        problems.append(f"destroy: {exc}")
    try:
        domain.dom.undefineFlags(_UNDEFINE_ALL)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            problems.append(f"undefine: {exc}")
    if problems:
        record(f"teardown_problems[{domain.name}]", "; ".join(problems))


@contextlib.contextmanager
def booted_domain(
    conn: libvirt.virConnect,
    daemon: LibvirtDaemon,
    image: GuestImage,
    workdir: Path,
    name: str,
    **kwargs,
) -> Iterator[E2EDomain]:
    domain = define_domain(conn, daemon, image, workdir, name, **kwargs)
    try:
        seconds = start_and_wait(domain)
        record(f"boot_to_agent_s[{name}]", seconds)
        print(f"e2e: {name} booted, agent answered after {seconds:.2f} s")
        yield domain
    finally:
        t0 = time.monotonic()
        remove_domain(domain)
        record(f"teardown_s[{name}]", time.monotonic() - t0)


@pytest.fixture(scope="session")
def main_domain(libvirt_conn, libvirt_daemon, guest_image, e2e_workdir) -> Iterator[E2EDomain]:
    """The shared guest: our socket channel, libvirt's agent channel, an idle channel."""
    with booted_domain(
        libvirt_conn,
        libvirt_daemon,
        guest_image,
        e2e_workdir / "main",
        MAIN_DOMAIN,
        hostname=MAIN_HOSTNAME,
        socket_channels=(GAGENT_CHANNEL, IDLE_CHANNEL),
        served=(GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL),
    ) as domain:
        yield domain


@pytest.fixture(autouse=True)
def _shared_guest_left_serving(request) -> Iterator[None]:
    """After each test on the shared guest: its agents must answer on their routes
    again within guest_health.SERVING_BOUND.  Else that test fails at teardown with
    what was wrong, and the guest is repaired so the next tests do not fail for it."""
    if "main_domain" not in request.fixturenames:
        yield
        return
    domain = request.getfixturevalue("main_domain")
    daemon = request.getfixturevalue("libvirt_daemon")
    yield
    found = _within(SERVING_BOUND * 2, lambda: wait_serving(domain), daemon)
    if found:
        outcome = repair(domain, found, reboot=lambda: start_and_wait(domain))
        record(f"guest_repaired_after[{request.node.name}]", outcome)
        pytest.fail(
            f"this test left the shared guest not serving its agents: {found}; {outcome}\n"
            f"{domain.tails()}"
        )


def _within(seconds: float, check: Callable[[], dict[str, str]], daemon: LibvirtDaemon):
    """``check()``, which talks to libvirtd through blocking libvirt calls, in a thread
    given ``seconds``.  If libvirtd stops answering the test process (it cannot be
    interrupted in a libvirt call), the run ends here with what the daemon was doing,
    and the daemon is killed so nothing else waits on it: never a silent hang."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(check()), daemon=True)
    worker.start()
    worker.join(seconds)
    if box:
        return box[0]
    evidence = daemon.diagnosis()
    with contextlib.suppress(OSError):
        os.kill(daemon.supervisor_pid or daemon.pid, signal.SIGKILL)
    pytest.exit(f"e2e: libvirtd did not answer the health check in {seconds:.0f}s\n{evidence}", 3)


_serial = itertools.count(1)


def _unique(prefix: str) -> str:
    """A fresh domain name per use: a domain a test leaves behind cannot clash."""
    return f"{prefix}-{next(_serial)}"


@pytest.fixture
def doomed_domain(libvirt_conn, libvirt_daemon, guest_image, e2e_workdir) -> Iterator[E2EDomain]:
    """A short-lived guest, e.g. for a test that kills it (both agent channels, one vCPU)."""
    name = _unique("gagent-e2e-doomed")
    with booted_domain(
        libvirt_conn, libvirt_daemon, guest_image, e2e_workdir / name, name, vcpus=1
    ) as domain:
        yield domain


@pytest.fixture
def doomed_domains(libvirt_conn, libvirt_daemon, guest_image, e2e_workdir):
    """Factory: ``boot(count)`` boots that many short-lived guests (as doomed_domain), one
    after another; all are removed after the test.  It runs trio itself: an async test
    calls it in a thread (``await trio.to_thread.run_sync(boot, 3)``)."""
    with contextlib.ExitStack() as stack:

        def boot(count: int) -> list[E2EDomain]:
            names = [_unique("gagent-e2e-doomed") for _ in range(count)]
            return [
                stack.enter_context(booted_domain(
                    libvirt_conn, libvirt_daemon, guest_image, e2e_workdir / n, n, vcpus=1
                ))
                for n in names
            ]  # fmt: skip

        yield boot


@pytest.fixture
def shut_off_domain(libvirt_conn, libvirt_daemon, guest_image, e2e_workdir) -> Iterator[E2EDomain]:
    """A domain defined with both agent channels and never started."""
    name = _unique("gagent-e2e-off")
    domain = define_domain(libvirt_conn, libvirt_daemon, guest_image, e2e_workdir / name, name)
    try:
        yield domain
    finally:
        remove_domain(domain)


@pytest.fixture(scope="session")
def guest_deb(e2e_host, tmp_path_factory) -> Path:
    """The gagent-guest .deb, built by the project's script (lintian runs in tests/guest)."""
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/build-packages.sh"), "--no-lint", "--out", str(out), "deb"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    debs = sorted(out.glob("gagent-guest_*_all.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        pytest.fail(f"e2e: building the .deb failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return debs[0]


@pytest.fixture(scope="session")
def systemd_image(guest_deb) -> SystemdImage:
    try:
        image = build_systemd_image(guest_deb)
    except BuildError as exc:
        pytest.fail(f"e2e: the systemd guest could not be built: {exc}")
    record("systemd_image_build_s", image.build_seconds)
    record("systemd_image_cached", image.cached)
    return image


@pytest.fixture(scope="session")
def systemd_domain(libvirt_conn, libvirt_daemon, systemd_image, e2e_workdir) -> Iterator[E2EDomain]:
    """The stock-Debian guest with our .deb: our socket channel and libvirt's, both
    served by qemu-ga through udev and systemd alone (its disk: an overlay)."""

    def overlay(workdir: Path) -> tuple[Path, str]:
        return root_overlay(systemd_image, workdir / "root.qcow2"), "qcow2"

    with booted_domain(
        libvirt_conn,
        libvirt_daemon,
        systemd_image,
        e2e_workdir / "systemd",
        SYSTEMD_DOMAIN,
        hostname=SYSTEMD_HOSTNAME,
        socket_channels=(GAGENT_CHANNEL,),
        served=(GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL),
        extra_cmdline=f"systemd.hostname={SYSTEMD_HOSTNAME}",
        make_disk=overlay,
    ) as domain:
        yield domain


@pytest.fixture
def e2e_record():
    """record(key, value): a timing for the "gagent e2e" summary."""
    return record


# ------------------------------------------------------------------ reporting


def pytest_collection_modifyitems(config, items) -> None:
    """Run the e2e tests last (their session fixtures then end with them, and fast
    tests fail fast); every test under tests/e2e must carry the e2e marker."""
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(item.path).parents]
    unmarked = [item.nodeid for item in ours if item.get_closest_marker("e2e") is None]
    if unmarked:
        raise pytest.UsageError(f"tests/e2e tests without pytestmark = pytest.mark.e2e: {unmarked}")
    if ours:
        mine = {id(item) for item in ours}
        items[:] = [item for item in items if id(item) not in mine] + ours


def pytest_terminal_summary(terminalreporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("gagent e2e")
    for key, value in TIMINGS.items():
        terminalreporter.write_line(f"{key}: {value}")

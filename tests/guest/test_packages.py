"""The guest packages: build (.deb, .rpm), contents, maintainer scripts, lintian.

Nothing here touches this machine's system: packages are built into temp
dirs, the .deb is installed only under ``dpkg --root`` into a temp root (its
maintainer scripts then run chrooted there), and the live-system branch of
the maintainer scripts runs in private mount+PID namespaces with stub
``systemctl``/``udevadm`` first (and alone) on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gagent.guest.roots import Roots
from gagent.guest.units import udev_activations

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/build-packages.sh"
VERSION = __import__("gagent.guest").guest.__version__
DEB_NAME = f"gagent-guest_{VERSION}_all.deb"
RPM_NAME = f"gagent-guest-{VERSION}-1.noarch.rpm"
#: the one source of the packages' maintainer and URLs
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
MAINTAINER = "{name} <{email}>".format(**PROJECT["maintainers"][0])
HOMEPAGE = PROJECT["urls"]["Homepage"]
SOURCE = PROJECT["urls"]["Source"]
GUARD = "gagent_live_system"
TRIGGER = (
    "udevadm trigger --action=add --subsystem-match=virtio-ports "
    "--attr-match=name=org.gagent.agent.0"
)


def _run(cmd, **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The output folder of one build of every package this machine can build, and the run."""
    have = [k for k, tool in (("deb", "dpkg-deb"), ("rpm", "rpmbuild")) if shutil.which(tool)]
    if not have:
        pytest.skip("neither dpkg-deb nor rpmbuild is installed (apt-get install dpkg rpm)")
    out = tmp_path_factory.mktemp("dist")
    proc = _run(["bash", str(SCRIPT), "--out", str(out), "--no-lint", *have])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def built(build) -> Path:
    return build[0]


@pytest.fixture(scope="module")
def deb(built) -> Path:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed (apt-get install dpkg)")
    return built / DEB_NAME


@pytest.fixture(scope="module")
def rpm(built) -> Path:
    if not shutil.which("rpmbuild"):
        pytest.skip("rpmbuild is not installed (apt-get install rpm)")
    return built / RPM_NAME


@pytest.fixture(scope="module")
def scripts(deb, tmp_path_factory) -> Path:
    control = tmp_path_factory.mktemp("control")
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    return control


# ---------------------------------------------------------------- the .deb


def test_deb_contents(deb):
    listing = _run(["dpkg-deb", "-c", str(deb)]).stdout
    paths = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    site = "/usr/lib/python3/dist-packages/gagent"
    expected = {
        "/usr/bin/gagent-guest",
        f"{site}/__init__.py",
        *(f"{site}/guest/{p.name}" for p in (REPO / "guest").glob("*.py")),
        "/lib/udev/rules.d/61-gagent-qga.rules",
        "/lib/systemd/system/gagent-qga@.service",
        "/etc/gagent/fsfreeze-hook",
        "/etc/gagent/fsfreeze-hook.d/",
        "/etc/gagent/deadman.conf",
        "/etc/default/gagent-qga",
        "/usr/share/man/man1/gagent-guest.1.gz",
        "/usr/share/doc/gagent-guest/copyright",
        "/usr/share/doc/gagent-guest/changelog.gz",
        "/usr/share/doc/gagent-guest/examples/fsfreeze-hook.d/10-example",
        "/usr/share/doc/gagent-guest/examples/sysvinit/gagent-qga",
    }
    assert expected <= paths, sorted(expected - paths)
    # the guest package carries no host code and no byte-code
    assert not [p for p in paths if "/gagent/host" in p or p.endswith(".pyc")]
    assert f"{site}/protocol.py" not in paths and f"{site}/client.py" not in paths
    assert "-rwxr-xr-x root/root" in next(
        line for line in listing.splitlines() if line.endswith("./etc/gagent/fsfreeze-hook")
    )


def test_deb_control_and_conffiles(deb, scripts):
    info = _run(["dpkg-deb", "-f", str(deb)]).stdout
    assert f"Version: {VERSION}" in info and "Architecture: all" in info
    assert "Depends: python3 (>= 3.9), qemu-guest-agent" in info
    conffiles = (scripts / "conffiles").read_text().split()
    assert conffiles == [
        "/etc/default/gagent-qga",
        "/etc/gagent/deadman.conf",
        "/etc/gagent/fsfreeze-hook",
    ]


def test_deb_maintainer_and_urls_are_pyprojects(deb, tmp_path):
    fields = _run(["dpkg-deb", "-f", str(deb), "Maintainer", "Homepage"]).stdout
    assert fields.splitlines() == [f"Maintainer: {MAINTAINER}", f"Homepage: {HOMEPAGE}"]
    root = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    doc = root / "usr/share/doc/gagent-guest"
    copyright_header = (doc / "copyright").read_text().split("\n\n")[0].splitlines()
    assert f"Upstream-Contact: {MAINTAINER}" in copyright_header
    assert f"Source: {SOURCE}" in copyright_header
    changelog = _run(["gzip", "-dc", str(doc / "changelog.gz")]).stdout
    assert f" -- {MAINTAINER}  " in changelog
    control = _run(["dpkg-deb", "-f", str(deb)]).stdout
    man = _run(["gzip", "-dc", str(root / "usr/share/man/man1/gagent-guest.1.gz")]).stdout
    assert man == (REPO / "packaging/man/gagent-guest.1").read_text()  # as the wheel has it
    for text in (control, (doc / "copyright").read_text(), changelog):
        assert not re.search(r"@[A-Z_]+@", text), text  # every placeholder filled


def test_no_template_writes_the_maintainer_or_homepage_by_hand():
    """pyproject.toml is their one place: the templates and the script only have placeholders."""
    email = PROJECT["maintainers"][0]["email"]
    templates = [*(REPO / "packaging/deb").iterdir(), REPO / "packaging/rpm/gagent-guest.spec"]
    for path in [*templates, SCRIPT]:
        text = path.read_text()
        assert email not in text and HOMEPAGE not in text, path
    assert "Maintainer: @MAINTAINER@" in (REPO / "packaging/deb/control.in").read_text()


def test_the_build_warns_once_while_the_addresses_are_placeholders(build):
    """example.org in pyproject.toml: one warning line, naming where to set them; else none."""
    warnings = [line for line in build[1].stderr.splitlines() if "warning" in line]
    if "example.org" in MAINTAINER + HOMEPAGE:
        assert len(warnings) == 1, build[1].stderr
        assert "placeholder" in warnings[0] and "pyproject.toml" in warnings[0]
    else:
        assert warnings == []


def test_deb_python_runs_as_installed(deb, tmp_path):
    root = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)  # a temp dir only
    site = root / "usr/lib/python3/dist-packages"
    for p in (REPO / "guest").glob("*.py"):
        assert (site / "gagent/guest" / p.name).read_bytes() == p.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    out = _run(
        [sys.executable, str(root / "usr/bin/gagent-guest"), "--version"], env=env, cwd=tmp_path
    )
    assert out.stdout.strip() == f"gagent-guest {VERSION}", out.stderr
    out = _run([sys.executable, "-m", "gagent.guest", "--version"], env=env, cwd=tmp_path)
    assert out.stdout.strip() == f"gagent-guest {VERSION}", out.stderr


def test_packaged_rule_starts_our_unit_only_on_our_port(deb, tmp_path):
    root = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    [rule] = udev_activations(Roots.under(root))
    assert rule.units == ["gagent-qga@%k.service"]
    assert rule.matches("org.gagent.agent.0") and not rule.matches("org.qemu.guest_agent.0")
    unit = (root / "lib/systemd/system/gagent-qga@.service").read_text()
    for line in (
        "BindsTo=dev-%i.device",
        "After=dev-%i.device",
        "ExecStart=/usr/sbin/qemu-ga -m virtio-serial -p /dev/%I -t /run/gagent-qga/%i "
        "$GAGENT_QGA_ARGS",
        "RuntimeDirectory=gagent-qga/%i",
        "EnvironmentFile=-/etc/default/gagent-qga",
    ):
        assert line in unit.splitlines()
    assert "[Install]" not in unit  # udev activates it; nothing to enable


def test_maintainer_scripts_are_guarded(scripts):
    for name in ("postinst", "prerm", "postrm"):
        text = (scripts / name).read_text()
        assert f"{GUARD}() {{" in text and "[ / -ef /proc/1/root ]" in text
        assert '[ -z "${DPKG_ROOT:-}" ]' in text and "[ -d /run/systemd/system ]" in text
        assert "#GAGENT-GUARD#" not in text.splitlines()
        assert _run(["sh", "-n", str(scripts / name)]).returncode == 0
        # every live action sits behind the guard
        body = text.split("case", 1)[1]
        for action in ("systemctl", "udevadm"):
            for line in body.splitlines():
                if line.strip().startswith(action):
                    assert f"if {GUARD}; then" in body.split(line.strip())[0]
    assert TRIGGER in (scripts / "postinst").read_text().replace("\\\n                    ", "")
    code = [ln for ln in (scripts / "postinst").read_text().splitlines() if "#" not in ln]
    assert not [ln for ln in code if "systemctl enable" in ln or "restart" in ln]


def test_shellcheck(scripts):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    files = [scripts / n for n in ("postinst", "prerm", "postrm")]
    files += [
        REPO / "packaging/fsfreeze/fsfreeze-hook",
        REPO / "packaging/fsfreeze/examples/10-example",
        REPO / "packaging/fsfreeze/deadman.conf",  # the hook sources it
    ]
    out = _run(["shellcheck", "-s", "sh", *map(str, files)])
    assert out.returncode == 0, out.stdout
    out = _run(["shellcheck", str(SCRIPT)])
    assert out.returncode == 0, out.stdout


def _stubs(directory: Path, log: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for tool in ("systemctl", "udevadm", "py3compile", "py3clean"):
        stub = directory / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 0\n')
        stub.chmod(0o755)


def _unshare_ok() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = _run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"], timeout=30)
    return probe.returncode == 0


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("postinst", ["configure"], [
            "py3compile -p gagent-guest", "systemctl --system daemon-reload",
            "udevadm control --reload-rules", TRIGGER,
        ]),
        ("postinst", ["configure", "0.0.9"], [
            "py3compile -p gagent-guest", "systemctl --system daemon-reload",
            "udevadm control --reload-rules", TRIGGER,
        ]),
        ("prerm", ["remove"], [
            "systemctl --no-block stop gagent-qga@*.service", "py3clean -p gagent-guest",
        ]),
        ("prerm", ["upgrade", VERSION], ["py3clean -p gagent-guest"]),  # agents keep running
        ("postrm", ["remove"], [
            "systemctl --system daemon-reload", "udevadm control --reload-rules",
        ]),
    ],
)  # fmt: skip
def test_maintainer_scripts_on_a_live_systemd_system(scripts, tmp_path, script, args, expected):
    """PID 1's root is ours and /run/systemd/system exists (private namespaces, stub tools)."""
    if not _unshare_ok():
        pytest.skip("needs root and unshare (private mount and PID namespaces)")
    log = tmp_path / "calls.log"
    log.touch()
    _stubs(tmp_path / "bin", log)
    inner = (
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && "
        f'exec env -i PATH="{tmp_path}/bin" /bin/sh "$0" "$@"'
    )
    out = _run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
         "sh", "-c", inner, str(scripts / script), *args],
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines() == expected
    assert not Path("/run/systemd/system").exists() or Path("/run/systemd/system").is_dir()


@pytest.mark.parametrize("args", [["remove"], ["upgrade", VERSION]])
def test_prerm_stops_the_resident_deadman(scripts, tmp_path, args):
    """A real dead-man's switch daemon in a private PID namespace (its own /run): prerm
    stops it on removal and upgrade (the next freeze starts the installed code)."""
    if not _unshare_ok():
        pytest.skip("needs root and unshare (private mount and PID namespaces)")
    log = tmp_path / "calls.log"
    log.touch()
    _stubs(tmp_path / "bin", log)
    inner = (
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && "
        f"{sys.executable} -m gagent.guest.deadman start && "
        "read -r pid </run/gagent/deadman/pid && "
        f'env -i PATH="{tmp_path}/bin:/usr/bin:/bin" /bin/sh "$0" "$@" || exit 1; '
        # gone, or a zombie of this shell (PID 1 here, which never reaps it)
        "for i in $(seq 100); do "
        "  grep -qs '^State:.*Z' /proc/$pid/status || [ ! -e /proc/$pid ] && exit 0; "
        "  sleep 0.1; "
        "done; echo still running; exit 9"
    )
    out = _run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
         "sh", "-c", inner, str(scripts / "prerm"), *args],
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_maintainer_scripts_touch_nothing_under_dpkg_root(scripts, tmp_path):
    log = tmp_path / "calls.log"
    log.touch()
    _stubs(tmp_path / "bin", log)
    for script, args in (("postinst", ["configure"]), ("prerm", ["remove"]), ("postrm", ["purge"])):
        out = _run(
            ["env", "-i", f"PATH={tmp_path}/bin", f"DPKG_ROOT={tmp_path}", "/bin/sh",
             str(scripts / script), *args],
            timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    assert "systemctl" not in log.read_text() and "udevadm" not in log.read_text()


def _dpkg_root(tmp_path: Path) -> tuple[Path, Path]:
    """An empty dpkg root with busybox as /bin/sh, stub tools and /run/systemd/system."""
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "bin",
              "tmp", "dev", "run/systemd/system", "usr/bin", "proc"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "var/lib/dpkg/available").touch()
    (root / "dev/null").touch()
    shutil.copy("/bin/busybox", root / "bin/sh")
    log = root / "calls.log"
    log.touch()
    _stubs(root / "usr/bin", Path("/calls.log"))
    return root, log


def test_dpkg_root_install_and_purge_in_a_chroot(deb, tmp_path):
    """An image build: dpkg --root runs the scripts chrooted; they must not touch the host,
    and must not hang, even with /proc mounted and /run/systemd/system in the image."""
    if not _unshare_ok() or not Path("/bin/busybox").exists():
        pytest.skip("needs root, unshare and /bin/busybox (busybox-static)")
    root, log = _dpkg_root(tmp_path)
    dpkg = f"dpkg --root={root} --force-depends"
    inner = (
        f"mount -t proc proc {root}/proc && {dpkg} -i {deb} && "
        f"{dpkg} -L gagent-guest && {dpkg} -P gagent-guest"
    )
    out = _run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
         "sh", "-c", inner],
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/lib/systemd/system/gagent-qga@.service" in out.stdout  # dpkg -L
    calls = log.read_text()
    assert "systemctl" not in calls and "udevadm" not in calls, calls
    assert "py3compile -p gagent-guest" in calls  # the chroot's own tools do run
    assert not (root / "lib/udev/rules.d/61-gagent-qga.rules").exists()  # purged
    assert not (root / "etc/gagent").exists()


def test_lintian(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed (apt-get install lintian)")
    out = _run(["lintian", "--fail-on", "error", "--display-info", str(deb)], timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    tags = [line for line in out.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == [], tags


# ---------------------------------------------------------------- the .rpm


def test_rpm_contents_and_scriptlets(rpm):
    files = set(_run(["rpm", "-qlp", str(rpm)]).stdout.split())
    assert {
        "/usr/bin/gagent-guest",
        "/usr/lib/udev/rules.d/61-gagent-qga.rules",
        "/usr/lib/systemd/system/gagent-qga@.service",
        "/etc/gagent/fsfreeze-hook",
        "/etc/gagent/deadman.conf",
        "/etc/sysconfig/gagent-qga",
        "/usr/share/man/man1/gagent-guest.1",
    } <= files
    assert any(f.endswith("/site-packages/gagent/guest/check.py") for f in files)
    scripts = _run(["rpm", "-qp", "--scripts", str(rpm)]).stdout
    assert scripts.count("[ / -ef /proc/1/root ]") == 3
    assert TRIGGER in scripts and '[ "$1" -eq 0 ]' in scripts
    header = _run(["rpm", "-qp", "--qf", "%{URL}\n%{PACKAGER}\n", str(rpm)]).stdout
    assert header.splitlines() == [HOMEPAGE, MAINTAINER]
    assert (
        f"* Thu Jan 01 2026 {MAINTAINER} - {VERSION}-1"
        in _run(["rpm", "-qp", "--changelog", str(rpm)]).stdout
    )
    requires = _run(["rpm", "-qpR", str(rpm)]).stdout
    assert "qemu-guest-agent" in requires and "python3 >= 3.9" in requires
    configs = _run(["rpm", "-qpc", str(rpm)]).stdout.split()
    assert configs == [
        "/etc/gagent/deadman.conf",
        "/etc/gagent/fsfreeze-hook",
        "/etc/sysconfig/gagent-qga",
    ]


def test_rpm_unit_uses_the_distribution_paths(rpm, tmp_path):
    if not shutil.which("rpm2cpio") or not shutil.which("cpio"):
        pytest.skip("rpm2cpio/cpio missing")
    payload = subprocess.run(["rpm2cpio", str(rpm)], check=True, capture_output=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=payload, cwd=tmp_path, check=True)
    unit = (tmp_path / "usr/lib/systemd/system/gagent-qga@.service").read_text()
    assert "ExecStart=/usr/bin/qemu-ga -m virtio-serial -p /dev/%I" in unit
    assert "EnvironmentFile=-/etc/sysconfig/gagent-qga" in unit


# ---------------------------------------------------------------- the fsfreeze hook


def _hook(tmp_path: Path, name: str, body: str, mode: int = 0o755) -> None:
    path = tmp_path / "hooks" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {name} $1 >> {tmp_path}/order\n{body}\n")
    path.chmod(mode)


def _freeze_hook(tmp_path: Path, arg: str) -> int:
    # the dead-man's switch off: tests/guest/test_deadman.py runs it
    (tmp_path / "deadman.conf").write_text("GAGENT_FREEZE_DEADLINE=0\n")
    env = {
        "PATH": os.environ["PATH"],
        "GAGENT_HOOK_DIR": str(tmp_path / "hooks"),
        "GAGENT_DEADMAN_CONF": str(tmp_path / "deadman.conf"),
    }
    hook = REPO / "packaging/fsfreeze/fsfreeze-hook"
    return _run(["sh", str(hook), arg], env=env, timeout=60).returncode


def test_fsfreeze_hook_order_and_failures(tmp_path):
    _hook(tmp_path, "10-a", "exit 0")
    _hook(tmp_path, "20-b", "exit 0")
    _hook(tmp_path, "30-off", "exit 0", mode=0o644)  # not executable: skipped
    _hook(tmp_path, "40-c.dpkg-old", "exit 0")  # leftover: skipped
    assert _freeze_hook(tmp_path, "freeze") == 0
    assert _freeze_hook(tmp_path, "thaw") == 0
    order = (tmp_path / "order").read_text().split("\n")
    assert order[:4] == ["10-a freeze", "20-b freeze", "20-b thaw", "10-a thaw"]
    (tmp_path / "order").unlink()
    _hook(tmp_path, "15-fail", "exit 3")
    assert _freeze_hook(tmp_path, "freeze") == 1  # refuses the freeze, stops there
    assert (tmp_path / "order").read_text().split() == ["10-a", "freeze", "15-fail", "freeze"]
    (tmp_path / "order").unlink()
    assert _freeze_hook(tmp_path, "thaw") == 1  # but every thaw hook still runs
    assert (tmp_path / "order").read_text().count("thaw") == 3
    assert _freeze_hook(tmp_path, "bogus") == 2


def test_fsfreeze_hook_without_hooks(tmp_path):
    assert _freeze_hook(tmp_path, "freeze") == 0


def test_unit_passes_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    shutil.copy(REPO / "packaging/systemd/gagent-qga@.service", tmp_path)
    out = _run(
        ["systemd-analyze", "verify", "--man=no", "gagent-qga@vport1p1.service"],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
        timeout=60,
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if "gagent-qga@" in line and "qemu-ga is not executable" not in line
    ]
    assert problems == [], problems

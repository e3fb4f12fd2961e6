"""What the published distribution carries besides the code (the ``published`` fixture of
conftest.py): gagent(1) and gagent-guest(1), the committed pages byte for byte, which pip installs
under PREFIX/share/man/man1, where man finds them from PREFIX/bin on PATH (man-db maps each PATH
directory to ../share/man) and renders them without a warning; pyproject.toml's maintainer and
URLs in the metadata; an sdist that builds that wheel."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MAN = REPO / "packaging" / "man"
PAGES = ("gagent.1", "gagent-guest.1")
TIMEOUT = 120


def installed(published, page: str) -> Path:
    return published.prefix / "share" / "man" / "man1" / page


@pytest.mark.parametrize("page", PAGES)
def test_the_wheel_installs_the_committed_page(published, page):
    with zipfile.ZipFile(published.wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(f".data/data/share/man/man1/{page}")]
        assert archive.read(name) == (MAN / page).read_bytes()
    assert installed(published, page).read_bytes() == (MAN / page).read_bytes()


@pytest.mark.skipif(
    shutil.which("man") is None, reason="man is not installed (apt-get install man-db)"
)
def test_man_finds_the_pages_next_to_the_commands_on_path(published):
    # no MANPATH: man's own search from PATH, as in a user's shell
    env = {k: v for k, v in published.env.items() if k != "MANPATH"}
    env["PATH"] = f"{published.prefix / 'bin'}:/usr/bin:/bin"
    proc = subprocess.run(
        ["man", "-w", "gagent", "gagent-guest"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = [Path(line).resolve() for line in proc.stdout.split()]
    assert found == [installed(published, page).resolve() for page in PAGES]


@pytest.mark.parametrize("page", PAGES)
def test_the_installed_page_renders_without_warnings(published, page):
    path = installed(published, page)
    if shutil.which("man"):
        argv = ["man", "--warnings", "-l", str(path)]
    elif shutil.which("groff"):
        argv = ["groff", "-man", "-ww", "-z", str(path)]
    else:
        pytest.skip("neither man nor groff is installed (apt-get install man-db groff-base)")
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert (proc.returncode, proc.stderr) == (0, "")
    if argv[0] == "man":
        command = "gagent agent fsfreeze freeze" if page == "gagent.1" else "gagent-guest check"
        assert command in proc.stdout


def test_the_metadata_names_pyprojects_maintainer_and_urls(published):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(published.wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    [maintainer] = project["maintainers"]
    assert metadata["Maintainer-email"] == f"{maintainer['name']} <{maintainer['email']}>"
    assert metadata.get_all("Project-URL") == [
        f"{label}, {url}" for label, url in project["urls"].items()
    ]


def test_the_sdist_carries_the_pages_and_no_tests(published):
    with tarfile.open(published.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"packaging/man/{page}" for page in PAGES} <= names
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "MANIFEST.in"} <= names
    # MANIFEST.in: the tests need the repository's harness, so they stay there
    assert not [n for n in names if n.startswith(("tests/", "bench/", "scripts/"))]

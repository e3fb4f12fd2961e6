"""Debian packages for the guest: apt resolution, download into the cache, ``dpkg-deb -x``.

Nothing is installed on the host: ``apt-get download`` fetches the .debs and
``dpkg-deb -x`` unpacks them into a directory the caller names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import urllib.parse
from pathlib import Path

from .common import BuildError, _log, _run, _sha256_file


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    version: str
    filename: str
    size: int
    sha256: str


_APT = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def _apt_fingerprint() -> str:
    """Changes whenever apt's idea of the candidate versions may change."""
    h = hashlib.sha256()
    roots = [Path("/var/lib/apt/lists"), Path("/etc/apt")]
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "partial")
            for fn in sorted(filenames):
                if fn == "lock":
                    continue
                p = Path(dirpath, fn)
                try:
                    st = p.stat()
                except OSError:
                    continue
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _kernel_package_name(meta: str) -> str:
    out = _run(["apt-cache", "show", "--no-all-versions", meta]).stdout
    for line in out.splitlines():
        if line.startswith("Depends:"):
            for dep in line.split(":", 1)[1].split(","):
                name = dep.strip().split()[0] if dep.strip() else ""
                if name.startswith("linux-image-"):
                    return name
    raise BuildError(f"cannot find the kernel package {meta} depends on")


def _print_uris(names: list[str]) -> list[Package]:
    with tempfile.TemporaryDirectory(prefix="gagent-apt-") as empty:
        # --print-uris prints nothing for a .deb already in the cwd: use an empty one.
        out = _run(["apt-get", *_APT, "download", "--print-uris", *names], cwd=empty).stdout
    pkgs = []
    for line in out.splitlines():
        m = re.match(r"^'[^']+' (\S+\.deb) (\d+) SHA256:([0-9a-f]{64})$", line.strip())
        if not m:
            continue
        filename, size, sha = m.group(1), int(m.group(2)), m.group(3)
        name, version = filename.split("_")[:2]
        pkgs.append(Package(name, urllib.parse.unquote(version), filename, size, sha))
    got = {p.name for p in pkgs}
    missing = [n for n in names if n not in got]
    if missing:
        raise BuildError(f"apt-get download --print-uris gave no .deb for {missing}")
    return pkgs


def resolve_packages(
    cache_dir: Path, kernel_meta: str, names: tuple[str, ...]
) -> tuple[str, list[Package]]:
    """Return (kernel package name, all packages), memoised per apt state.

    ``kernel_meta`` is a metapackage (``linux-image-amd64``) whose
    ``linux-image-*`` dependency is the kernel package; ``names`` are the rest.
    """
    memo = cache_dir / "apt-resolution.json"
    fingerprint = _apt_fingerprint()
    names_key = [kernel_meta, *names]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(memo.read_text())
        if data["fingerprint"] == fingerprint and data["names"] == names_key:
            return data["kernel"], [Package(**p) for p in data["packages"]]

    def attempt() -> tuple[str, list[Package]]:
        kernel = _kernel_package_name(kernel_meta)
        return kernel, _print_uris([kernel, *names])

    try:
        kernel, pkgs = attempt()
    except BuildError as first:
        if os.geteuid() != 0:
            raise BuildError(f"{first}\n(run 'apt-get update' as root and retry)") from None
        _log("package lookup failed; running apt-get update once")
        _run(["apt-get", "update", "-qq"])
        fingerprint = _apt_fingerprint()
        kernel, pkgs = attempt()
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
    tmp.write_text(
        json.dumps(
            {
                "fingerprint": fingerprint,
                "names": names_key,
                "kernel": kernel,
                "packages": [dataclasses.asdict(p) for p in pkgs],
            },
            indent=1,
        )
    )
    os.replace(tmp, memo)
    return kernel, pkgs


def fetch_packages(cache_dir: Path, pkgs: list[Package]) -> dict[str, Path]:
    """Download the .debs into <cache>/debs (reused while their sha256 matches)."""
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path] = {}
    wanted = []
    for p in pkgs:
        path = debs / p.filename
        if path.exists() and path.stat().st_size == p.size and _sha256_file(path) == p.sha256:
            result[p.name] = path
        else:
            wanted.append(p)
    if wanted:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=debs) as tmp:
            os.chmod(tmp, 0o755)
            _run(
                ["apt-get", *_APT, "-q", "download", *(f"{p.name}={p.version}" for p in wanted)],
                cwd=tmp,
            )
            for p in wanted:
                src = Path(tmp, p.filename)
                if not src.exists() or _sha256_file(src) != p.sha256:
                    raise BuildError(f"download of {p.filename} failed or has a wrong sha256")
                os.replace(src, debs / p.filename)
                result[p.name] = debs / p.filename
    keep = {p.filename for p in pkgs}
    for old in debs.glob("*.deb"):
        if old.name not in keep:
            with contextlib.suppress(OSError):
                old.unlink()
    return result


def _dpkg_extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)])

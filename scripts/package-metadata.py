#!/usr/bin/env python3
"""Print the guest packages' metadata, read from pyproject.toml (its one source), as shell
assignments for scripts/build-packages.sh to eval.

    scripts/package-metadata.py [PYPROJECT]      (default: the repository's pyproject.toml)

VERSION ([project] version), MAINTAINER ("name <email>", the first of [project] maintainers),
HOMEPAGE and SOURCE ([project.urls] Homepage, and Source, else Homepage).  A maintainer address
or homepage on a reserved example domain (example.org: the placeholders we ship until there is a
public address) is one warning line on stderr.  A missing or malformed field: one line, exit 1.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
#: RFC 2606's names: an address or page there reaches nobody.
EXAMPLE_DOMAINS = ("example.org", "example.com", "example.net", "example")


class MetadataError(Exception):
    """pyproject.toml lacks a field the packages need."""


def on_example_domain(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith(f".{d}") for d in EXAMPLE_DOMAINS)


def one_line(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise MetadataError(f"{key} must be one line of text, not {value!r}")
    return value


def read_metadata(pyproject: Path) -> dict[str, str]:
    import tomllib  # here, so that a python3 older than 3.11 fails with our one line

    with pyproject.open("rb") as f:
        project = tomllib.load(f).get("project", {})
    maintainers = project.get("maintainers") or []
    if not maintainers or "email" not in maintainers[0]:
        raise MetadataError("[project] maintainers needs a first entry with a name and an email")
    name = one_line("maintainers[0].name", maintainers[0].get("name", ""))
    email = one_line("maintainers[0].email", maintainers[0]["email"])
    urls = project.get("urls", {})
    if "Homepage" not in urls:
        raise MetadataError("[project.urls] needs a Homepage")
    return {
        "VERSION": one_line("version", project.get("version", "")),
        "MAINTAINER": f"{name} <{email}>",
        "HOMEPAGE": one_line("urls.Homepage", urls["Homepage"]),
        "SOURCE": one_line("urls.Source", urls.get("Source", urls["Homepage"])),
    }


def placeholders(metadata: dict[str, str]) -> list[str]:
    """The maintainer address and the homepage, where they are on an example domain."""
    email = metadata["MAINTAINER"].rsplit("<", 1)[1].rstrip(">")
    found = []
    if on_example_domain(email.rpartition("@")[2]):
        found.append(f"the maintainer address {email}")
    if on_example_domain(urlsplit(metadata["HOMEPAGE"]).hostname or ""):
        found.append(f"the homepage {metadata['HOMEPAGE']}")
    return found


def main(argv: list[str]) -> int:
    pyproject = Path(argv[0]) if argv else DEFAULT_PYPROJECT
    try:
        metadata = read_metadata(pyproject)
    except ImportError:
        print("package-metadata: needs python3 3.11 or later (tomllib)", file=sys.stderr)
        return 1
    except (OSError, ValueError, MetadataError) as exc:
        print(f"package-metadata: {pyproject}: {exc}", file=sys.stderr)
        return 1
    found = placeholders(metadata)
    if found:
        print(
            f"package-metadata: warning: {' and '.join(found)} "
            f"{'are placeholders' if len(found) > 1 else 'is a placeholder'}: set [project] "
            f"maintainers and [project.urls] in {pyproject.name} before publishing",
            file=sys.stderr,
        )
    for key, value in metadata.items():
        print(f"{key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Fixtures for the inventory tests: test-driver hypervisors and both store backends."""

from __future__ import annotations

import pytest
from pgserver import find_pg_bindir, running_pg_server  # this directory is on sys.path

from gagent.host.inventory.testnode import NodeDomain, write_node


@pytest.fixture
def make_node(tmp_path):
    """``make_node("h1", [NodeDomain(...), ...])`` -> ``"h1=test:///.../h1.xml"``."""

    def make(name: str, domains: list[NodeDomain]) -> str:
        return f"{name}={write_node(tmp_path / f'{name}.xml', domains)}"

    return make


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole session (skipped only without the binaries)."""
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "apt-get install postgresql"
        )
    pytest.importorskip(
        "psycopg", reason="psycopg 3 is not installed: pip install 'psycopg[binary]'"
    )
    with running_pg_server(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request, tmp_path):
    """The --db value of a fresh, empty inventory, once per backend."""
    if request.param == "sqlite":
        return str(tmp_path / "inventory.sqlite3")
    return request.getfixturevalue("pg_server").new_database()

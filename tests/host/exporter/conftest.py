"""Fixtures for the exporter tests: test-driver hypervisors (helpers: exporter_helpers.py)."""

from __future__ import annotations

import pytest

from gagent.host.inventory.testnode import NodeDomain, write_node


@pytest.fixture
def make_node(tmp_path):
    """``make_node("h1", [NodeDomain(...), ...])`` -> ``("h1", "test:///.../h1.xml")``."""

    def make(name: str, domains: list[NodeDomain]) -> tuple[str, str]:
        return name, write_node(tmp_path / f"{name}.xml", domains)

    return make

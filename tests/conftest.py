"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from gagent.localagent import local_qemu_ga


@pytest.fixture
def qemu_ga(tmp_path):
    """A real qemu-ga on this host (unix-listen, dangerous RPCs blocked), stopped by PID."""
    with local_qemu_ga(tmp_path) as agent:
        yield agent

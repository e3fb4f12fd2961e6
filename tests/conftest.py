"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import socket

import pytest

from gagent.localagent import local_qemu_ga


@pytest.fixture
def qemu_ga(tmp_path):
    """A real qemu-ga on this host (unix-listen, dangerous RPCs blocked), stopped by PID."""
    with local_qemu_ga(tmp_path) as agent:
        yield agent


@pytest.fixture
def silent_unix_socket(tmp_path):
    """The path of a unix socket that accepts and never answers (an agent that hangs)."""
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(16)
    try:
        yield path
    finally:
        server.close()


@pytest.fixture(autouse=True, scope="session")
def _private_state_dir(tmp_path_factory):
    """gagent's state (snapshot consistency records) goes to a directory of the run's own,
    never to the machine's /var/lib/gagent (gagent commands run in subprocesses too)."""
    os.environ["GAGENT_STATE_DIR"] = str(tmp_path_factory.mktemp("gagent-state"))


@pytest.fixture(autouse=True, scope="session")
def _no_configuration_file():
    """No configuration file of the machine or the user (~/.config/gagent/config.toml,
    /etc/gagent/config.toml) changes what the suite's commands do: /dev/null is read."""
    os.environ["GAGENT_CONFIG"] = os.devnull

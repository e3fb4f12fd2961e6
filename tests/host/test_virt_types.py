"""gagent.host.virt_types: libvirt-free names, checked against libvirt's own constants."""

from __future__ import annotations

import libvirt
import pytest

from gagent.host.virt_types import (
    CpuCompatibility,
    DomainEvent,
    DomainState,
    JobProgress,
    resolve_uri,
)

# ------------------------------------------------------------------ resolve_uri


def test_resolve_uri_explicit_wins_over_environment(monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///session")
    assert resolve_uri("test:///default") == "test:///default"


def test_resolve_uri_falls_back_to_environment(monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///session")
    assert resolve_uri(None) == "qemu:///session"


def test_resolve_uri_none_lets_libvirt_choose(monkeypatch):
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    assert resolve_uri(None) is None


def test_resolve_uri_empty_environment_is_none(monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "")
    assert resolve_uri(None) is None


# ------------------------------------------------------------------- DomainState


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (libvirt.VIR_DOMAIN_NOSTATE, DomainState.NOSTATE),
        (libvirt.VIR_DOMAIN_RUNNING, DomainState.RUNNING),
        (libvirt.VIR_DOMAIN_BLOCKED, DomainState.BLOCKED),
        (libvirt.VIR_DOMAIN_PAUSED, DomainState.PAUSED),
        (libvirt.VIR_DOMAIN_SHUTDOWN, DomainState.SHUTDOWN),
        (libvirt.VIR_DOMAIN_SHUTOFF, DomainState.SHUTOFF),
        (libvirt.VIR_DOMAIN_CRASHED, DomainState.CRASHED),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, DomainState.PMSUSPENDED),
    ],
)
def test_domain_state_from_libvirt_constants(code, state):
    assert DomainState.from_libvirt(code) is state


@pytest.mark.parametrize("code", [-1, 8, 99])
def test_domain_state_unknown_codes_are_nostate(code):
    assert DomainState.from_libvirt(code) is DomainState.NOSTATE


def test_domain_state_is_active():
    active = {s for s in DomainState if s.is_active}
    assert active == {DomainState.RUNNING, DomainState.BLOCKED, DomainState.PAUSED}


# ------------------------------------------------------------------- DomainEvent


@pytest.mark.parametrize(
    ("code", "detail"),
    [
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, "defined"),
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, "undefined"),
        (libvirt.VIR_DOMAIN_EVENT_STARTED, "started"),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, "suspended"),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, "resumed"),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, "stopped"),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, "shutdown"),
        (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, "pmsuspended"),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, "crashed"),
        (99, "event 99"),
    ],
)
def test_lifecycle_events_named_from_libvirt_constants(code, detail):
    assert DomainEvent.lifecycle("vm1", code) == DomainEvent("vm1", "lifecycle", detail)


def test_agent_events_named_from_libvirt_constants():
    connected = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
    disconnected = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED
    assert DomainEvent.agent("vm1", connected).detail == "agent connected"
    assert DomainEvent.agent("vm1", disconnected).detail == "agent disconnected"
    assert DomainEvent.agent("vm1", 7) == DomainEvent("vm1", "agent", "state 7")


# ------------------------------------------------------- migration facts


def test_cpu_compatibility_from_libvirt_constants():
    compatible = CpuCompatibility.from_libvirt
    assert compatible(libvirt.VIR_CPU_COMPARE_IDENTICAL) is CpuCompatibility.IDENTICAL
    assert compatible(libvirt.VIR_CPU_COMPARE_SUPERSET) is CpuCompatibility.SUPERSET
    for code in (libvirt.VIR_CPU_COMPARE_INCOMPATIBLE, libvirt.VIR_CPU_COMPARE_ERROR):
        assert compatible(code) is CpuCompatibility.INCOMPATIBLE


def test_job_kinds_from_libvirt_constants():
    kinds = {
        libvirt.VIR_DOMAIN_JOB_NONE: "none",
        libvirt.VIR_DOMAIN_JOB_BOUNDED: "bounded",
        libvirt.VIR_DOMAIN_JOB_UNBOUNDED: "unbounded",
        libvirt.VIR_DOMAIN_JOB_COMPLETED: "completed",
        libvirt.VIR_DOMAIN_JOB_FAILED: "failed",
        libvirt.VIR_DOMAIN_JOB_CANCELLED: "cancelled",
    }
    for code, kind in kinds.items():
        assert JobProgress.from_libvirt([code, 0, 0, 0, 0, 0]).kind == kind

"""gagent.host.virt against libvirt's built-in test driver (no daemon).

``test:///default`` keeps one driver state per process, shared by every
connection of the process and dropped when the last one closes: the ``conn``
fixture holds a connection for the test's duration, and every test that
changes domains makes its own (unique name, undefined at the end).

``test:///ABSOLUTE/PATH.xml`` loads a node file; its state is private to each
*connection* (not to each path): see test_node_file_state_is_private_per_connection.
"""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import libvirt
import pytest
import trio
from libvirt_domains import domain_xml, unique

from gagent.errors import HostError
from gagent.host import virt, virt_calls, virt_types
from gagent.host.virt import (
    DEFAULT_URI,
    DomainNotFound,
    DomainState,
    LibvirtAgentError,
    open_hypervisor,
)

TIMEOUT = 10
HOST = Path(__file__).resolve().parents[2] / "host"


# --------------------------------------------------------------- the boundary


def _imports_libvirt(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(name.split(".")[0] in ("libvirt", "libvirt_qemu") for name in names):
            return True
    return False


def test_only_virt_calls_imports_libvirt():
    # even under TYPE_CHECKING: the rest of host/ goes through gagent.host.virt
    importers = [
        str(p.relative_to(HOST)) for p in sorted(HOST.rglob("*.py")) if _imports_libvirt(p)
    ]
    assert importers == ["virt_calls.py"]


def test_the_libvirt_import_check_can_fail(tmp_path):
    for source in ("import libvirt_qemu\n", "if x:\n    from libvirt import virDomain\n"):
        (tmp_path / "m.py").write_text(source)
        assert _imports_libvirt(tmp_path / "m.py")
    (tmp_path / "m.py").write_text("from .libvirt import x\nimport libvirtish\n")
    assert not _imports_libvirt(tmp_path / "m.py")


def test_virt_exports_the_names_its_helper_modules_hold():
    # callers import everything from gagent.host.virt, wherever it lives
    assert all(hasattr(virt, name) for name in virt.__all__)
    assert set(virt_types.__all__) <= set(virt.__all__)
    assert virt.watch_events is virt_calls.watch_events
    assert virt.ERROR_CODES is virt_calls.ERROR_CODES


async def test_open_hypervisor_uses_environment_uri(monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", DEFAULT_URI)
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor()
        try:
            assert hv.uri == DEFAULT_URI
            assert await hv.hostname()
        finally:
            await hv.close()


async def test_open_hypervisor_explicit_uri_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", f"test://{tmp_path}/missing-node.xml")
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            assert hv.uri == DEFAULT_URI
        finally:
            await hv.close()


# --------------------------------------------------------------- open failures


async def test_open_hypervisor_bad_uri_is_host_error(tmp_path):
    uri = f"test://{tmp_path}/no-such-node.xml"
    with trio.fail_after(TIMEOUT), pytest.raises(HostError) as info:
        await open_hypervisor(uri)
    err = info.value
    assert str(err).startswith(f"cannot connect to {uri}: ")
    assert err.code == libvirt.VIR_ERR_XML_ERROR
    assert err.libvirt_message and "no-such-node.xml" in err.libvirt_message


async def test_open_hypervisor_malformed_node_file_is_host_error(tmp_path):
    node = tmp_path / "node.xml"
    node.write_text("<node><domain type='test'><name>x</name>")
    with trio.fail_after(TIMEOUT), pytest.raises(HostError) as info:
        await open_hypervisor(f"test://{node}")
    assert info.value.code is not None
    assert info.value.libvirt_message


# ---------------------------------------------------------------------- lookup


async def test_lookup_by_name_uuid_and_id(conn, make_domain):
    name = make_domain()
    dom = conn.lookupByName(name)
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            by_name = await hv.lookup(name)
            by_uuid = await hv.lookup(dom.UUIDString())
            by_id = await hv.lookup(str(dom.ID()))
            assert by_name.name == by_uuid.name == by_id.name == name
            assert by_name.uuid == by_uuid.uuid == by_id.uuid == dom.UUIDString()
            assert await by_id.id() == dom.ID()
        finally:
            await hv.close()


async def test_lookup_uuid_in_upper_case(conn, make_domain):
    name = make_domain()
    upper = conn.lookupByName(name).UUIDString().upper()
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            assert (await hv.lookup(upper)).name == name
        finally:
            await hv.close()


async def test_lookup_digit_name_of_inactive_domain_falls_back_to_name(make_domain):
    # An inactive domain has no ID: "987654" is tried as an ID, then as a name.
    name = make_domain(start=False, name=f"98765{uuid.uuid4().int % 10000}")
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            dom = await hv.lookup(name)
            assert dom.name == name
            assert await dom.id() is None
        finally:
            await hv.close()


@pytest.mark.parametrize(
    "ref", ["no-such-domain", "424242", "0d1c5f0e-0000-4000-8000-000000000000"]
)
async def test_lookup_unknown_is_domain_not_found(ref):
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            with pytest.raises(DomainNotFound) as info:
                await hv.lookup(ref)
        finally:
            await hv.close()
    err = info.value
    assert isinstance(err, HostError)
    assert err.code == libvirt.VIR_ERR_NO_DOMAIN
    assert err.libvirt_message and "not found" in err.libvirt_message.lower()
    assert repr(ref) in str(err)
    assert DEFAULT_URI in str(err)
    assert f"virsh -c {DEFAULT_URI} list --all" in str(err)  # the connection it looked on


async def test_domains_lists_ours(make_domain):
    running, stopped = make_domain(), make_domain(start=False)
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            names = {d.name for d in await hv.domains()}
        finally:
            await hv.close()
    assert {running, stopped, "test"} <= names


# ----------------------------------------------------------------- live states


async def test_live_states_follow_the_domain(conn, make_domain):
    name = make_domain()
    raw = conn.lookupByName(name)
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            dom = await hv.lookup(name)
            assert await dom.state() is DomainState.RUNNING
            raw.suspend()
            assert await dom.state() is DomainState.PAUSED
            raw.resume()
            raw.destroy()
            assert await dom.state() is DomainState.SHUTOFF
            # libvirt caches the ID in the handle: a fresh lookup sees the domain has none
            assert await (await hv.lookup(name)).id() is None
        finally:
            await hv.close()


# ----------------------------------------------------------- XML and definitions


async def test_xml_live_and_inactive(make_domain):
    name = make_domain()
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            dom = await hv.lookup(name)
            live, inactive = await dom.xml(), await dom.xml(inactive=True)
        finally:
            await hv.close()
    assert f"<name>{name}</name>" in live and f"<name>{name}</name>" in inactive
    assert " id='" in live.splitlines()[0]
    assert " id='" not in inactive.splitlines()[0]


async def test_define_xml_of_bad_xml_keeps_libvirts_code():
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            with pytest.raises(HostError) as info:
                await hv.define_xml("<domain type='test'><name>broken")
        finally:
            await hv.close()
    err = info.value
    assert type(err) is HostError
    assert err.code == libvirt.VIR_ERR_XML_DETAIL
    assert err.libvirt_message and "Premature end of data" in err.libvirt_message
    assert str(err).startswith("defining the domain: ")
    assert err.libvirt_message in str(err)


async def test_define_xml_conflicting_uuid_keeps_libvirts_code(conn, make_domain):
    name = make_domain(start=False)
    other = uuid.uuid4()
    xml = domain_xml(name).replace("</name>", f"</name>\n  <uuid>{other}</uuid>")
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            with pytest.raises(HostError) as info:
                await hv.define_xml(xml)
        finally:
            await hv.close()
    assert info.value.code == libvirt.VIR_ERR_OPERATION_FAILED
    assert "already exists" in (info.value.libvirt_message or "")
    # the old definition stands
    assert conn.lookupByName(name).UUIDString() != str(other)


async def test_define_xml_returns_the_domain(conn):
    name = unique()
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            dom = await hv.define_xml(domain_xml(name))
            try:
                assert dom.name == name
                assert await dom.is_persistent()
                assert await dom.state() is DomainState.SHUTOFF
            finally:
                conn.lookupByName(name).undefine()
        finally:
            await hv.close()


async def test_is_persistent_defined_and_transient(make_domain):
    defined, transient = make_domain(), make_domain(persistent=False)
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            assert await (await hv.lookup(defined)).is_persistent() is True
            assert await (await hv.lookup(transient)).is_persistent() is False
        finally:
            await hv.close()


# ----------------------------------------------- what the test driver refuses


async def test_attach_device_refusal_is_host_error_with_code(make_domain):
    name = make_domain()
    device = (
        "<channel type='unix'>\n  <target type='virtio' name='org.gagent.agent.0'/>\n</channel>"
    )
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            dom = await hv.lookup(name)
            with pytest.raises(HostError) as info:
                await dom.attach_device(device, live=True, config=False)
            with pytest.raises(HostError) as detach_info:
                await dom.detach_device(device, live=True, config=True)
        finally:
            await hv.close()
    for err in (info.value, detach_info.value):
        assert err.code == libvirt.VIR_ERR_NO_SUPPORT
        assert "not supported" in (err.libvirt_message or "")
    assert str(info.value).startswith(f"attaching to {name}: ")
    assert str(detach_info.value).startswith(f"detaching from {name}: ")


async def test_agent_command_refusal_is_libvirt_agent_error(make_domain):
    name = make_domain()
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(DEFAULT_URI)
        try:
            dom = await hv.lookup(name)
            with pytest.raises(LibvirtAgentError) as info:
                await dom.agent_command('{"execute": "guest-ping"}', 5)
        finally:
            await hv.close()
    err = info.value
    assert isinstance(err, HostError)
    assert err.code == libvirt.VIR_ERR_NO_SUPPORT
    assert "virDomainQemuAgentCommand" in (err.libvirt_message or "")
    assert str(err).startswith(f"agent command through libvirt on {name}: ")


# ------------------------------------------------------------ node-file URIs


def test_node_file_state_is_private_per_connection(tmp_path):
    """Each connection to test:///PATH.xml gets its own copy of the node file's state."""
    node = tmp_path / "node.xml"
    node.write_text(f"<node>\n{domain_xml('vm1')}</node>\n")
    uri = f"test://{node}"
    first, second = libvirt.open(uri), libvirt.open(uri)
    try:
        assert first.lookupByName("vm1").isActive()
        second.lookupByName("vm1").destroy()
        assert not second.lookupByName("vm1").isActive()
        assert first.lookupByName("vm1").isActive()  # untouched by the other connection
        second.defineXML(domain_xml("only-in-second"))
        with pytest.raises(libvirt.libvirtError):
            first.lookupByName("only-in-second")
    finally:
        first.close()
        second.close()


def test_default_state_is_shared_while_a_connection_is_open(conn):
    name = unique()
    other = libvirt.open(DEFAULT_URI)
    try:
        other.defineXML(domain_xml(name))
        assert conn.lookupByName(name).name() == name
    finally:
        other.close()
        conn.lookupByName(name).undefine()


async def test_node_file_domains_are_found(tmp_path):
    node = tmp_path / "node.xml"
    node.write_text(f"<node>\n{domain_xml('vm-a')}{domain_xml('vm-b')}</node>\n")
    with trio.fail_after(TIMEOUT):
        hv = await open_hypervisor(f"test://{node}")
        try:
            assert hv.uri == f"test://{node}"
            assert {d.name for d in await hv.domains()} == {"vm-a", "vm-b"}
            assert await (await hv.lookup("vm-b")).state() is DomainState.RUNNING
        finally:
            await hv.close()

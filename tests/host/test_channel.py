"""gagent.host.channel: golden files, libvirt's own schema, and unit tests.

Golden cases live in tests/host/golden/NAME-in.xml; the operation named in
CASES turns each into NAME-out.xml.  After changing the code on purpose, run
with GAGENT_REGEN_GOLDEN=1 to rewrite the -out files, then read their diff.
Every input and output (and every hot-plug device) is checked against
libvirt's schema with virt-xml-validate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from gagent.errors import GagentError, UsageError
from gagent.host.channel import (
    GAGENT_CHANNEL,
    LIBVIRT_AGENT_CHANNEL,
    Channel,
    ChannelSpec,
    XmlChange,
    add_channel,
    agent_socket_path,
    find_channel,
    list_channels,
    path_uses,
    remove_channel,
    validate,
    validate_name,
    xml_diff,
)

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("GAGENT_REGEN_GOLDEN") == "1"
VALIDATOR = shutil.which("virt-xml-validate")

CASES = {
    "no-channels": lambda x: add_channel(x, ChannelSpec()),
    "spice": lambda x: add_channel(x, ChannelSpec()),
    "guest-agent": lambda x: add_channel(x, ChannelSpec()),
    "other-controllers": lambda x: add_channel(x, ChannelSpec()),
    "several-serial": lambda x: add_channel(x, ChannelSpec()),
    "already-present": lambda x: add_channel(x, ChannelSpec()),
    "explicit-path": lambda x: add_channel(x, ChannelSpec(path="/run/gagent/ci-runner-3.sock")),
    "remove": lambda x: remove_channel(x, GAGENT_CHANNEL),
    "libvirt-managed": lambda x: add_channel(
        x, ChannelSpec(LIBVIRT_AGENT_CHANNEL), libvirt_managed=True
    ),
}
# The cases that add a virtio-serial controller (their input has none).
ADDS_CONTROLLER = {"no-channels", "other-controllers", "libvirt-managed"}


def schema_check(path: Path) -> None:
    """Fail unless libvirt's own RelaxNG schema accepts the domain XML at ``path``."""
    if VALIDATOR is None:
        pytest.skip("virt-xml-validate (libvirt-clients) is not installed")
    proc = subprocess.run(
        [VALIDATOR, str(path), "domain"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{path.name} fails libvirt's schema:\n{proc.stdout}{proc.stderr}"


def device_in_domain(device_xml: str) -> str:
    """Wrap a standalone device in the smallest domain the schema accepts."""
    return (
        "<domain type='kvm'>\n  <name>hotplug</name>\n  <memory>65536</memory>\n"
        "  <os>\n    <type>hvm</type>\n  </os>\n  <devices>\n"
        f"{device_xml}\n  </devices>\n</domain>\n"
    )


def virtio_serial_count(xml: str) -> int:
    return len(etree.fromstring(xml.encode()).findall("devices/controller[@type='virtio-serial']"))


def read(case: str) -> str:
    return (GOLDEN / f"{case}-in.xml").read_text()


# -- golden files -------------------------------------------------------------


def test_every_golden_input_has_a_case():
    inputs = {p.name.removesuffix("-in.xml") for p in GOLDEN.glob("*-in.xml")}
    outputs = {p.name.removesuffix("-out.xml") for p in GOLDEN.glob("*-out.xml")}
    assert inputs == set(CASES)
    assert outputs <= set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case, tmp_path):
    src = read(case)
    out_file = GOLDEN / f"{case}-out.xml"
    result = CASES[case](src)
    assert isinstance(result, XmlChange)
    if REGEN:
        out_file.write_text(result.xml)
    assert result.xml == out_file.read_text()

    schema_check(GOLDEN / f"{case}-in.xml")
    schema_check(out_file)
    if result.device_xml is not None:
        device_file = tmp_path / "device.xml"
        device_file.write_text(device_in_domain(result.device_xml))
        schema_check(device_file)

    diff = xml_diff(src, result.xml).splitlines()
    removed = [line for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line for line in diff if line.startswith("+") and not line.startswith("+++")]
    if case == "already-present":
        assert not result.changed and result.xml == src and diff == []
        assert "already present" in result.message
    elif case == "remove":
        # Only the channel's own lines go; everything else stays byte for byte.
        assert result.changed and added == [] and len(removed) == 5
        assert find_channel(result.xml, GAGENT_CHANNEL) is None
        assert virtio_serial_count(result.xml) == 1
        assert [ch.name for ch in list_channels(result.xml)] == [
            "com.redhat.spice.0",
            LIBVIRT_AGENT_CHANNEL,
        ]
    else:
        # Additions only: no original line is rewritten (quotes, comments, order).
        assert result.changed and removed == []
        assert len(added) == 4 + (case in ADDS_CONTROLLER)
        assert ("virtio-serial controller" in result.message) == (case in ADDS_CONTROLLER)
        assert virtio_serial_count(result.xml) == virtio_serial_count(src) + (
            case in ADDS_CONTROLLER
        )
        name = LIBVIRT_AGENT_CHANNEL if case == "libvirt-managed" else GAGENT_CHANNEL
        channel = find_channel(result.xml, name)
        assert channel is not None and (channel.kind, channel.target_type) == ("unix", "virtio")
        assert channel.mode == "bind"
        expected_path = "/run/gagent/ci-runner-3.sock" if case == "explicit-path" else None
        assert channel.path == expected_path
        assert result.device_xml is not None and name in result.device_xml


def test_golden_channel_goes_after_existing_channels():
    out = (GOLDEN / "guest-agent-out.xml").read_text()
    assert [ch.name for ch in list_channels(out)] == [LIBVIRT_AGENT_CHANNEL, GAGENT_CHANNEL]
    out = (GOLDEN / "several-serial-out.xml").read_text()
    assert [ch.name for ch in list_channels(out)][-1] == GAGENT_CHANNEL
    assert virtio_serial_count(out) == 2


def test_added_controller_takes_index_zero_beside_other_controllers():
    out = etree.fromstring((GOLDEN / "other-controllers-out.xml").read_bytes())
    (ctl,) = out.findall("devices/controller[@type='virtio-serial']")
    assert ctl.get("index") == "0"
    assert ctl.getprevious().get("type") == "sata"  # after the last existing controller


# -- properties ------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(CASES)), name=names, with_path=st.booleans())
def test_add_is_idempotent_and_remove_undoes_it(case, name, with_path):
    src = read(case)
    assume(name != LIBVIRT_AGENT_CHANNEL and find_channel(src, name) is None)
    spec = ChannelSpec(name, f"/run/gagent/{name}.sock" if with_path else None)
    once = add_channel(src, spec)
    assert once.changed and find_channel(once.xml, name) is not None
    twice = add_channel(once.xml, spec)
    assert not twice.changed and twice.xml == once.xml
    gone = remove_channel(once.xml, name)
    assert gone.changed and find_channel(gone.xml, name) is None
    assert list_channels(gone.xml) == list_channels(src)
    if virtio_serial_count(src):
        assert gone.xml == src  # nothing else moved, not even whitespace


# -- live XML ------------------------------------------------------------------

RUN_DIR = "/var/lib/libvirt/qemu/channel/target/domain-3-web01"
LIVE = f"""<domain type='kvm' id='3'>
  <name>web01</name>
  <uuid>9a41c2e7-0b3d-4f5a-8e6c-27d1f0a4b8c9</uuid>
  <memory unit='KiB'>2097152</memory>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <devices>
    <controller type='virtio-serial' index='0'>
      <alias name='virtio-serial0'/>
    </controller>
    <channel type='unix'>
      <source mode='bind' path='{RUN_DIR}/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='{RUN_DIR}/org.gagent.agent.0'/>
      <target type='virtio' name='org.gagent.agent.0' state='disconnected'/>
      <alias name='channel1'/>
      <address type='virtio-serial' controller='0' bus='0' port='2'/>
    </channel>
    <channel type='spicevmc'>
      <target type='virtio' name='com.redhat.spice.0' state='disconnected'/>
      <alias name='channel2'/>
      <address type='virtio-serial' controller='0' bus='0' port='3'/>
    </channel>
    <channel type='pty'>
      <source path='/dev/pts/4'/>
      <target type='virtio' name='org.example.debug.0' state='disconnected'/>
      <alias name='channel3'/>
      <address type='virtio-serial' controller='0' bus='0' port='4'/>
    </channel>
    <channel type='tcp'>
      <source mode='connect' host='127.0.0.1' service='4600'/>
      <target type='guestfwd' address='10.0.2.1' port='4600'/>
      <alias name='channel4'/>
    </channel>
  </devices>
</domain>
"""


def test_live_sample_is_valid_for_libvirt(tmp_path):
    live = tmp_path / "live.xml"
    live.write_text(LIVE)
    schema_check(live)


def test_list_channels_on_live_xml():
    assert list_channels(LIVE) == [
        Channel(
            LIBVIRT_AGENT_CHANNEL,
            "unix",
            "virtio",
            f"{RUN_DIR}/{LIBVIRT_AGENT_CHANNEL}",
            "bind",
            "connected",
        ),
        Channel(
            GAGENT_CHANNEL, "unix", "virtio", f"{RUN_DIR}/{GAGENT_CHANNEL}", "bind", "disconnected"
        ),
        Channel("com.redhat.spice.0", "spicevmc", "virtio", None, None, "disconnected"),
        Channel("org.example.debug.0", "pty", "virtio", "/dev/pts/4", None, "disconnected"),
        Channel(None, "tcp", "guestfwd", None, "connect", None),
    ]


def test_list_channels_accepts_bytes_and_empty_devices():
    assert len(list_channels(LIVE.encode())) == 5
    assert list_channels("<domain type='kvm'><name>x</name></domain>") == []
    assert list_channels("<domain type='kvm'><devices/></domain>") == []


def test_find_channel_and_agent_socket_path():
    assert find_channel(LIVE, "com.redhat.spice.0").kind == "spicevmc"
    assert find_channel(LIVE, "org.nope.0") is None
    assert agent_socket_path(LIVE) == f"{RUN_DIR}/{GAGENT_CHANNEL}"
    assert agent_socket_path(LIVE, LIBVIRT_AGENT_CHANNEL) == f"{RUN_DIR}/{LIBVIRT_AGENT_CHANNEL}"
    assert agent_socket_path(LIVE, "org.example.debug.0") is None  # a pty is no socket
    assert agent_socket_path(LIVE, "com.redhat.spice.0") is None
    assert agent_socket_path(read("no-channels")) is None
    # Inactive XML: libvirt has not chosen the path yet.
    assert agent_socket_path(read("already-present")) is None


# -- validate ---------------------------------------------------------------------


def test_libvirt_agent_channel_is_refused_unless_libvirt_managed():
    spec = ChannelSpec(LIBVIRT_AGENT_CHANNEL)
    with pytest.raises(UsageError) as info:
        validate(spec)
    message = str(info.value)
    assert "--libvirt-managed" in message and "qemuAgentCommand" in message
    assert GAGENT_CHANNEL in message
    with pytest.raises(UsageError, match="--libvirt-managed"):
        add_channel(read("no-channels"), spec)
    validate(spec, libvirt_managed=True)


@pytest.mark.parametrize(
    "name",
    ["has space", "a/b", "a,b", "a=b", ".", "..", ".hidden", "-x", "_x", "naïve", "a\nb", "a\tb",
     "../../etc/passwd", "x" * 256],
)  # fmt: skip
def test_bad_channel_names_are_refused(name):
    with pytest.raises(UsageError, match="invalid channel name") as info:
        validate(ChannelSpec(name))
    assert f"e.g. --name {GAGENT_CHANNEL}" in str(info.value)  # the way out
    assert "\n" not in str(info.value).replace(repr(name), "")  # one line
    with pytest.raises(UsageError, match="invalid channel name"):
        add_channel(read("no-channels"), ChannelSpec(name))
    with pytest.raises(UsageError, match="invalid channel name"):
        validate_name(name)


def test_empty_channel_name_is_refused_not_defaulted():
    for check in (
        lambda: validate(ChannelSpec("")),
        lambda: validate_name(""),
        lambda: add_channel(read("no-channels"), ChannelSpec("")),
    ):
        with pytest.raises(UsageError) as info:
            check()
        assert str(info.value) == (
            f"the channel name is empty: give a name with --name (or leave --name out for "
            f"{GAGENT_CHANNEL})"
        )


@pytest.mark.parametrize("name", [GAGENT_CHANNEL, "a", "A_b-9.c", "com.example.agent.1", "x" * 255])
def test_good_channel_names_pass(name):
    validate(ChannelSpec(name))


def test_default_spec():
    spec = ChannelSpec()
    assert (spec.name, spec.path) == (GAGENT_CHANNEL, None)
    validate(spec)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("path", ["relative.sock", "./x.sock", "/run/gagent/"])
def test_socket_path_must_be_absolute_file(path):
    with pytest.raises(UsageError, match="absolute path"):
        validate(ChannelSpec(path=path), check_dir=False)


def test_socket_path_length_is_checked():
    with pytest.raises(UsageError, match="longer than 107 bytes"):
        validate(ChannelSpec(path="/run/" + "x" * 103), check_dir=False)
    validate(ChannelSpec(path="/run/" + "x" * 102), check_dir=False)


def test_socket_directory_must_exist(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UsageError) as info:
        validate(ChannelSpec(path=str(missing / "vm.sock")))
    assert str(missing) in str(info.value) and "create it" in str(info.value)
    validate(ChannelSpec(path=str(missing / "vm.sock")), check_dir=False)
    validate(ChannelSpec(path=str(tmp_path / "vm.sock")))
    with pytest.raises(UsageError, match="existing directory"):
        validate(ChannelSpec(path=str(tmp_path)))


def test_add_channel_does_not_touch_the_file_system():
    out = add_channel(read("no-channels"), ChannelSpec(path="/nonexistent/dir/vm.sock"))
    assert find_channel(out.xml, GAGENT_CHANNEL).path == "/nonexistent/dir/vm.sock"


# -- add / remove edge cases ---------------------------------------------------------


def test_same_name_with_another_path_must_be_removed_first():
    src = read("remove")  # ours is bound at /run/gagent/win2022-ad.sock
    with pytest.raises(UsageError, match="remove it first"):
        add_channel(src, ChannelSpec(path="/run/gagent/other.sock"))
    same = add_channel(src, ChannelSpec(path="/run/gagent/win2022-ad.sock"))
    assert not same.changed and same.xml == src
    # No path asked for: whatever path the existing channel has is fine.
    assert not add_channel(src, ChannelSpec()).changed


def test_path_given_but_channel_has_libvirt_chosen_path():
    with pytest.raises(UsageError, match="remove it first"):
        add_channel(read("already-present"), ChannelSpec(path="/run/gagent/arm.sock"))


def test_same_name_but_not_a_unix_socket():
    with pytest.raises(UsageError, match="a pty channel"):
        add_channel(read("several-serial"), ChannelSpec("org.example.debug.0"))


def test_socket_path_used_by_another_channel():
    with pytest.raises(UsageError, match=r"already used by channel org\.example\.telemetry\.0"):
        add_channel(read("several-serial"), ChannelSpec(path="/run/telemetry/telemetry-node.sock"))


# -- path_uses: every host path a domain's devices name -----------------------------


PATHS_XML = """<domain type='kvm'>
  <name>paths</name>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/images/paths.qcow2'/>
      <backingStore type='file'><source file='/var/lib/images/base.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='vhostuser'>
      <source type='unix' path='/run/vhost/paths-net.sock' mode='server'/>
    </interface>
    <serial type='unix'>
      <source mode='bind' path='/run/paths/serial.sock'/>
      <target port='0'/>
    </serial>
    <console type='unix'>
      <source mode='bind' path='/run/paths/serial.sock'/>
      <target type='serial' port='0'/>
    </console>
    <!-- <channel type='unix'><source path='/commented/out.sock'/></channel> -->
    <channel type='unix'>
      <source mode='bind' path='/run/paths/agent.sock'/>
      <target type='virtio' name='org.gagent.agent.0'/>
    </channel>
    <channel type='pty'>
      <target type='virtio' name='org.example.pty.0'/>
    </channel>
  </devices>
</domain>
"""


def test_path_uses_lists_every_source_path_of_every_device():
    assert [(u.device, u.name, u.path) for u in path_uses(PATHS_XML)] == [
        ("disk", None, "/var/lib/images/paths.qcow2"),
        ("disk", None, "/var/lib/images/base.qcow2"),
        ("interface", None, "/run/vhost/paths-net.sock"),
        ("serial", None, "/run/paths/serial.sock"),
        ("console", None, "/run/paths/serial.sock"),
        ("channel", GAGENT_CHANNEL, "/run/paths/agent.sock"),
    ]
    assert [str(u) for u in path_uses(PATHS_XML)][-2:] == ["console", f"channel {GAGENT_CHANNEL}"]


def test_path_uses_of_golden_inputs():
    assert [(u.device, u.name, u.path) for u in path_uses(read("several-serial"))] == [
        ("disk", None, "/var/lib/libvirt/images/telemetry-node.qcow2"),
        ("channel", "org.example.telemetry.0", "/run/telemetry/telemetry-node.sock"),
    ]  # <source network='default'/> names no path
    assert [u.path for u in path_uses(read("no-channels"))] == [
        "/var/lib/libvirt/images/tcg-minimal.qcow2"
    ]


def test_libvirt_managed_agent_channel_already_present():
    result = add_channel(
        read("guest-agent"), ChannelSpec(LIBVIRT_AGENT_CHANNEL), libvirt_managed=True
    )
    assert not result.changed and result.device_xml is None


def test_remove_absent_channel_changes_nothing():
    src = read("no-channels")
    result = remove_channel(src, GAGENT_CHANNEL)
    assert (result.changed, result.xml, result.device_xml) == (False, src, None)
    assert "no channel" in result.message


def test_remove_keeps_controller_and_returns_device_for_detach():
    result = remove_channel(read("already-present"), GAGENT_CHANNEL)
    assert virtio_serial_count(result.xml) == 1
    assert result.device_xml == (
        "<channel type='unix'>\n"
        "  <source mode='bind'/>\n"
        "  <target type='virtio' name='org.gagent.agent.0'/>\n"
        "  <address type='virtio-serial' controller='0' bus='0' port='1'/>\n"
        "</channel>"
    )
    assert "<!-- added by gagent -->" in result.xml  # comments are not ours to remove


def test_device_xml_for_hotplug():
    result = add_channel(read("spice"), ChannelSpec(path="/run/gagent/fedora.sock"))
    assert result.device_xml == (
        "<channel type='unix'>\n"
        "  <source mode='bind' path='/run/gagent/fedora.sock'/>\n"
        "  <target type='virtio' name='org.gagent.agent.0'/>\n"
        "</channel>"
    )


# -- formatting -------------------------------------------------------------------


def test_compact_document_stays_compact():
    src = "<domain type='kvm'><name>x</name><devices><disk type='file'/></devices></domain>"
    out = add_channel(src, ChannelSpec()).xml
    assert out == (
        "<domain type='kvm'><name>x</name><devices><disk type='file'/>"
        "<controller type='virtio-serial' index='0'/>"
        "<channel type='unix'><source mode='bind'/>"
        "<target type='virtio' name='org.gagent.agent.0'/></channel>"
        "</devices></domain>"
    )


def test_four_space_indentation_and_empty_devices():
    src = "<domain type='kvm'>\n    <name>x</name>\n    <devices/>\n</domain>\n"
    out = add_channel(src, ChannelSpec()).xml
    assert out == (
        "<domain type='kvm'>\n    <name>x</name>\n    <devices>\n"
        "        <controller type='virtio-serial' index='0'/>\n"
        "        <channel type='unix'>\n"
        "            <source mode='bind'/>\n"
        "            <target type='virtio' name='org.gagent.agent.0'/>\n"
        "        </channel>\n"
        "    </devices>\n</domain>\n"
    )


def test_missing_devices_element_is_created():
    src = "<domain type='qemu'>\n  <name>x</name>\n</domain>"
    out = add_channel(src, ChannelSpec()).xml
    assert out == (
        "<domain type='qemu'>\n  <name>x</name>\n  <devices>\n"
        "    <controller type='virtio-serial' index='0'/>\n"
        "    <channel type='unix'>\n"
        "      <source mode='bind'/>\n"
        "      <target type='virtio' name='org.gagent.agent.0'/>\n"
        "    </channel>\n"
        "  </devices>\n</domain>"
    )


def test_declaration_double_quotes_and_bytes_are_kept():
    src = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<domain type="kvm">\n  <name>d&apos;q</name>\n  <devices>\n'
        '    <controller type="virtio-serial" index="0"/>\n  </devices>\n</domain>\n'
    )
    out = add_channel(src.encode(), ChannelSpec()).xml
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<domain type="kvm">\n')
    assert "<name>d&apos;q</name>" in out  # untouched line, not lxml's d'q
    assert '    <channel type="unix">\n      <source mode="bind"/>\n' in out
    assert out.endswith("  </devices>\n</domain>\n")
    assert remove_channel(out, GAGENT_CHANNEL).xml == src


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("<domain type='kvm'>\n  <devices>\n</domain>", r"malformed domain XML: .*\(line 3\)"),
        ("", "malformed domain XML"),
        ("<domain type='kvm'><name>x</name></domain>trailing", "malformed domain XML"),
        ("<network><name>default</name></network>", "root element is <network>"),
        (b"<domain type='kvm'><name>\xff</name></domain>", "not UTF-8"),
    ],
)
def test_malformed_or_foreign_xml(text, pattern):
    for operation in (
        list_channels,
        lambda x: add_channel(x, ChannelSpec()),
        lambda x: remove_channel(x, GAGENT_CHANNEL),
    ):
        with pytest.raises(UsageError, match=pattern):
            operation(text)


def test_entities_are_not_expanded():
    src = (
        '<!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/hostname">]>\n'
        "<domain type='kvm'><name>&x;</name><devices/></domain>"
    )
    out = add_channel(src, ChannelSpec()).xml
    assert "&x;" in out


def test_non_text_input():
    with pytest.raises(UsageError, match="str or bytes"):
        list_channels(None)  # type: ignore[arg-type]


def test_usage_error_is_a_gagent_error():
    assert issubclass(UsageError, GagentError)


# -- xml_diff ---------------------------------------------------------------------


def test_xml_diff():
    src = read("no-channels")
    assert xml_diff(src, src) == ""
    diff = xml_diff(src, add_channel(src, ChannelSpec()).xml)
    assert diff.startswith("--- current\n+++ proposed\n@@ ")
    assert "+    <controller type='virtio-serial' index='0'/>\n" in diff
    assert "+      <target type='virtio' name='org.gagent.agent.0'/>\n" in diff
    assert xml_diff("<a/>", "<b/>") == "--- current\n+++ proposed\n@@ -1 +1 @@\n-<a/>\n+<b/>\n"


def test_tag_split_over_lines_falls_back_to_lxml_serialisation(tmp_path):
    # Hand-edited files may wrap a tag; lxml joins it, so lines no longer map one
    # to one and the whole document comes from lxml (still in libvirt's quotes).
    src = read("guest-agent").replace(
        "<disk type='file' device='disk'>", "<disk type='file'\n      device='disk'>"
    )
    result = add_channel(src, ChannelSpec())
    assert "<disk type='file' device='disk'>" in result.xml
    assert result.xml == (GOLDEN / "guest-agent-out.xml").read_text()
    out = tmp_path / "out.xml"
    out.write_text(result.xml)
    schema_check(out)

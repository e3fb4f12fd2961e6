"""Reading the rscan fields from domain XML, and the one JSON shape of a guest."""

from __future__ import annotations

import pytest

from gagent.errors import UsageError
from gagent.host.inventory import AgentData, Guest, parse_domain_xml, parse_targets
from gagent.host.inventory.targets import Target, uri_host

RUNNING = """
<domain type='kvm' id='41'>
  <name>kvm1</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static' current='2'>4</vcpu>
  <devices>
    <disk type='file' device='disk'><source file='/install/vms/kvm1.hda.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><source dev='/dev/vg0/kvm1'/><target dev='vdb'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/kvm1'>
      <host name='mon1'/></source><target dev='vdc'/></disk>
    <disk type='volume' device='disk'><source pool='default' volume='kvm1-data'/>
      <target dev='vdd'/></disk>
    <disk type='file' device='cdrom'><target dev='sda'/></disk>
    <interface type='bridge'><mac address='52:54:00:aa:00:01'/><source bridge='br0'/></interface>
    <interface type='network'><mac address='52:54:00:aa:00:02'/><source network='default'/>
    </interface>
    <interface type='direct'><mac address='52:54:00:aa:00:03'/><source dev='eth1' mode='vepa'/>
    </interface>
    <interface type='user'><mac address='52:54:00:aa:00:04'/></interface>
  </devices>
</domain>
"""


def test_running_domain_has_every_field():
    g = parse_domain_xml(RUNNING, hypervisor="kvmhost1", state="running")
    assert (g.type, g.name, g.hypervisor, g.id, g.cpu, g.memory) == (
        "kvm",
        "kvm1",
        "kvmhost1",
        41,
        2,
        2048,
    )
    assert g.uuid == "11111111-2222-3333-4444-555555555555"
    assert [(n.type, n.source, n.mac) for n in g.nics] == [
        ("bridge", "br0", "52:54:00:aa:00:01"),
        ("network", "default", "52:54:00:aa:00:02"),
        ("direct", "eth1", "52:54:00:aa:00:03"),
        ("user", None, "52:54:00:aa:00:04"),
    ]
    # every disk with a source, the empty CD-ROM left out
    assert [(d.type, d.source, d.target) for d in g.disks] == [
        ("file", "/install/vms/kvm1.hda.qcow2", "vda"),
        ("block", "/dev/vg0/kvm1", "vdb"),
        ("network", "rbd:pool/kvm1", "vdc"),
        ("volume", "default/kvm1-data", "vdd"),
    ]
    assert g.row() == [
        "kvm",
        "kvm1",
        "kvmhost1",
        "41",
        "2",
        "2048",
        "br0/52:54:00:aa:00:01,default/52:54:00:aa:00:02,eth1/52:54:00:aa:00:03,"
        "user/52:54:00:aa:00:04",
        "/install/vms/kvm1.hda.qcow2,/dev/vg0/kvm1,rbd:pool/kvm1,default/kvm1-data",
    ]


def test_shut_off_domain_has_a_blank_id():
    xml = "<domain type='kvm'><name>kvm2</name><memory>1048576</memory><vcpu>2</vcpu></domain>"
    g = parse_domain_xml(xml, hypervisor="kvmhost2", state="shut off")
    assert g.id is None and g.row()[3] == ""
    assert (g.cpu, g.memory, g.nics, g.disks) == (2, 1024, [], [])


@pytest.mark.parametrize(
    ("memory", "mib"),
    [
        ("<memory unit='GiB'>4</memory>", 4096),
        ("<memory unit='M'>512</memory>", 512),
        ("<memory unit='bytes'>1073741824</memory>", 1024),
        ("<memory unit='MB'>1000</memory>", 954),
        ("<memory>524288</memory>", 512),
        ("", None),
    ],
)
def test_memory_units_become_mib(memory, mib):
    g = parse_domain_xml(
        f"<domain type='kvm'><name>x</name>{memory}</domain>", hypervisor="h", state="shut off"
    )
    assert g.memory == mib


def test_json_round_trip_keeps_everything():
    g = parse_domain_xml(RUNNING, hypervisor="kvmhost1", state="running").with_agent(
        "ok",
        AgentData(
            version="7.2",
            os="Debian GNU/Linux 12",
            kernel="6.1",
            hostname="kvm1",
            interfaces=[{"name": "eth0", "mac": "m", "addresses": ["10.0.0.5/24"]}],
            filesystems=[{"mountpoint": "/", "type": "ext4", "used_bytes": 1, "total_bytes": 2}],
            users=[],
            missing=["guest-get-users: disabled"],
        ),
    )
    data = g.to_json()
    for key in (
        "type",
        "name",
        "hypervisor",
        "id",
        "cpu",
        "memory",
        "nics",
        "disks",
        "uuid",
        "state",
        "agent",
    ):
        assert key in data
    assert Guest.from_json(data) == g
    assert g.agent is not None and g.agent.addresses() == ["10.0.0.5/24"]


def test_uri_host_part():
    assert uri_host("qemu+ssh://root@kvmhost1/system") == "kvmhost1"
    assert uri_host("qemu+tcp://kvmhost2:16509/system") == "kvmhost2"
    assert uri_host("qemu:///system") is None
    assert uri_host("test:///tmp/node.xml") is None


def test_targets_names_order_and_hosts_file(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "# name uri\nh3 test:///tmp/h3.xml\n\nqemu+ssh://root@kvm9/system  # by host part\n"
        "test:///tmp/h1.xml\n"
    )
    targets = parse_targets(
        [
            "h1=test:///tmp/h1.xml",
            "qemu+unix:///system?socket=/nonexistent",
            "x=qemu+ssh://kvm8/system",
        ],
        hosts,
    )
    assert targets == [
        Target("test:///tmp/h1.xml", "h1"),
        Target("qemu+unix:///system?socket=/nonexistent", None),  # a query's '=' is not NAME=
        Target("qemu+ssh://kvm8/system", "kvm8"),  # the URI's host part wins
        Target("test:///tmp/h3.xml", "h3"),
        Target("qemu+ssh://root@kvm9/system", "kvm9"),
        # the repeated URI is scanned once, at its first place
    ]


@pytest.mark.parametrize(
    ("args", "hosts", "message"),
    [
        ([], None, "no hypervisor to scan"),
        (["not-a-uri"], None, "is not a libvirt URI"),
        (["a=test:///1.xml", "a=test:///2.xml"], None, "two hypervisors are named 'a'"),
        ([], "a b c\n", "expected 'NAME URI'"),
        ([], "a nota-uri\n", "is not a libvirt URI"),
    ],
)
def test_targets_refuse_bad_input(tmp_path, args, hosts, message):
    path = None
    if hosts is not None:
        path = tmp_path / "hosts"
        path.write_text(hosts)
    with pytest.raises(UsageError, match=message):
        parse_targets(args, path)


def test_missing_hosts_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read hosts file"):
        parse_targets([], tmp_path / "nope")

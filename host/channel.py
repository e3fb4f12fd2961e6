"""Pure operations on libvirt domain XML for the agent channel (lxml only, no libvirt).

Each operation takes the domain XML as text and returns new text; talking to
libvirt (defineXML, attachDeviceFlags...) is the caller's business.  Defaults
live in :class:`ChannelSpec`, checks in :func:`validate`, and parsing in the
helpers below, in the spirit of virt-manager's virtinst.

The channel we add is ``<channel type='unix'>`` with ``<source mode='bind'/>``:
QEMU creates and listens on the socket, gagent connects to it.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

from lxml import etree

from gagent.errors import UsageError

from .channel_names import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from .domxml import Channel, channel_of, parse_channels

__all__ = [
    "GAGENT_CHANNEL", "LIBVIRT_AGENT_CHANNEL", "Channel", "ChannelSpec", "PathUse", "XmlChange",
    "add_channel", "agent_socket_path", "check_socket_directory", "find_channel",
    "list_channels", "path_uses", "remove_channel", "validate", "validate_name", "xml_diff",
]  # fmt: skip

# libvirt's schema and parser accept any string as a virtio port name (even ''),
# but the name becomes a file name twice: libvirt's own socket for it
# (.../channel/target/domain-N-DOMAIN/NAME on the host) and the guest's
# /dev/virtio-ports/NAME link; it is also a value in QEMU's -device option.  So
# we keep to a charset that is safe in all three: no '/', ',', '=', blanks,
# control characters, and no leading '.' or '-' (., .., hidden or option-like).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_MAX = 255  # NAME_MAX of the guest's /dev/virtio-ports entry
# Elements whose <source> attributes name a host file or socket: every device
# that can hold a socket path (channel, serial, console, parallel, vhost-user
# interfaces, redirdev...) has it in <source path=...>; disks in file=..., some
# vhost-user devices in socket=....
_SOURCE_PATH_ATTRIBUTES = ("path", "file", "socket")
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1: QEMU refuses longer paths
# Where `virsh dumpxml` puts channels: after these (the first group wins).
_BEFORE_CHANNELS = "emulator disk controller lease filesystem interface smartcard serial parallel"
_CHANNEL_AFTER = (("channel",), (*_BEFORE_CHANNELS.split(), "console"))
_CONTROLLER_AFTER = (("controller",), ("emulator", "disk"))
_XML_DECL = re.compile(r"\A\s*<\?xml[^>]*\?>\s*")


@dataclass(frozen=True)
class ChannelSpec:
    """The channel to add: a virtio port ``name`` backed by a unix socket.

    ``path=None`` (the default) leaves the socket path to libvirt, which puts
    it under its own run directory (e.g. /var/lib/libvirt/qemu/channel/target/
    domain-N-NAME/) owned by the user QEMU runs as.  Permission problems on
    that socket are the most common failure in the field: gagent must run as
    a user that may connect to it (root, or a group the QEMU user's sockets
    grant).  An explicit ``path`` must be absolute and its directory must
    exist and be writable by the QEMU user (and allowed by SELinux/AppArmor).
    """

    name: str = GAGENT_CHANNEL
    path: str | None = None


@dataclass(frozen=True)
class XmlChange:
    """Result of an edit: the whole new document and the device for hot-plug."""

    xml: str
    changed: bool
    message: str
    device_xml: str | None  # standalone <channel>, for attach/detachDeviceFlags


def validate(spec: ChannelSpec, *, libvirt_managed: bool = False, check_dir: bool = True) -> None:
    """Raise UsageError unless ``spec`` names a channel gagent can own.

    ``check_dir`` looks at this machine's file system: leave it off when the
    libvirt host is remote.
    """
    validate_name(spec.name, libvirt_managed=libvirt_managed)
    path = spec.path
    if path is None:
        return
    if not os.path.isabs(path) or path.endswith("/"):
        raise UsageError(f"socket path {path!r} must be an absolute path to a file")
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise UsageError(
            f"socket path {path!r} is longer than {_SUN_PATH_MAX} bytes, "
            "which unix sockets (and so QEMU) cannot use: choose a shorter one"
        )
    if check_dir:
        check_socket_directory(path)


def check_socket_directory(path: str) -> None:
    """Raise UsageError unless ``path``'s directory exists on this machine (and ``path``
    is not itself a directory)."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise UsageError(
            f"directory {directory} for socket {path} does not exist: create it, writable by "
            "the user QEMU runs as (e.g. qemu or libvirt-qemu), or give no path to let "
            "libvirt choose one"
        )
    if os.path.isdir(path):
        raise UsageError(f"socket path {path} is an existing directory, not a socket")


def validate_name(name: str, *, libvirt_managed: bool = False) -> None:
    """Raise UsageError unless ``name`` is a virtio port name gagent may add."""
    if name == LIBVIRT_AGENT_CHANNEL and not libvirt_managed:
        raise UsageError(
            f"{LIBVIRT_AGENT_CHANNEL} is libvirt's own agent channel: libvirt connects to its "
            "socket whenever the domain runs, and the socket then serves nobody else, so "
            f"gagent cannot use it directly. Use the default name {GAGENT_CHANNEL} for a "
            "channel gagent owns, or pass --libvirt-managed: libvirt will own the socket and "
            "gagent will reach the agent through libvirt (qemuAgentCommand)."
        )
    if not name:
        raise UsageError(
            f"the channel name is empty: give a name with --name (or leave --name out for "
            f"{GAGENT_CHANNEL})"
        )
    if not _NAME_RE.fullmatch(name) or len(name) > _NAME_MAX:
        raise UsageError(
            f"invalid channel name {name!r}: use letters, digits, '.', '-' and '_' only, "
            f"starting with a letter or digit, at most {_NAME_MAX} characters "
            f"(the guest sees it as /dev/virtio-ports/NAME), e.g. --name {GAGENT_CHANNEL}"
        )


@dataclass(frozen=True)
class PathUse:
    """A host file or socket a domain's device names in its ``<source>``."""

    device: str  # the device's element: 'channel', 'serial', 'console', 'disk', ...
    name: str | None  # the channel's <target name=...>, for channels
    path: str

    def __str__(self) -> str:
        return f"{self.device} {self.name}" if self.name else self.device


def path_uses(domain_xml: str | bytes) -> list[PathUse]:
    """Every host path the domain's devices name in a ``<source>`` (document order)."""
    devices = _Doc(domain_xml).root.find("devices")
    uses: list[PathUse] = []
    for device in [] if devices is None else devices:
        if not isinstance(device.tag, str):
            continue  # comments, processing instructions
        target = device.find("target") if device.tag == "channel" else None
        name = target.get("name") if target is not None else None
        for source in device.iter("source"):
            for attribute in _SOURCE_PATH_ATTRIBUTES:
                if value := source.get(attribute):
                    uses.append(PathUse(device.tag, name, value))
    return uses


def list_channels(domain_xml: str | bytes) -> list[Channel]:
    """Every ``<channel>`` of the domain, in document order (the read model's parser)."""
    return parse_channels(domain_xml)


def find_channel(domain_xml: str | bytes, name: str) -> Channel | None:
    """The channel whose ``<target name=...>`` is ``name``, if any."""
    return next((ch for ch in list_channels(domain_xml) if ch.name == name), None)


def agent_socket_path(live_xml: str | bytes, name: str = GAGENT_CHANNEL) -> str | None:
    """Host path of the unix socket behind channel ``name`` (use the LIVE XML:
    libvirt fills in the paths it chose only while the domain runs)."""
    ch = find_channel(live_xml, name)
    return ch.path if ch is not None and ch.kind == "unix" else None


def add_channel(
    domain_xml: str | bytes, spec: ChannelSpec, *, libvirt_managed: bool = False
) -> XmlChange:
    """Add a unix/virtio channel (and a virtio-serial controller if none exists).

    Only the XML is checked here; call :func:`validate` with ``check_dir``
    on the libvirt host to check the socket's directory.
    """
    validate(spec, libvirt_managed=libvirt_managed, check_dir=False)
    doc = _Doc(domain_xml)
    devices = doc.root.find("devices")
    if devices is None:
        devices = _insert(doc.root, etree.Element("devices"), ())
    for el in devices.findall("channel"):
        ch = channel_of(el)
        if ch.name == spec.name:
            if ch.kind != "unix" or (spec.path is not None and spec.path != ch.path):
                have = f"a {ch.kind} channel" + (f" at {ch.path}" if ch.path else "")
                want = spec.path or "a socket path chosen by libvirt"
                raise UsageError(
                    f"channel {spec.name} already exists as {have}, not a unix socket at "
                    f"{want}: remove it first, then add it again"
                )
            return XmlChange(doc.text, False, f"channel {spec.name} is already present", None)
        if spec.path is not None and ch.path == spec.path:
            raise UsageError(f"socket path {spec.path} is already used by channel {ch.name}")
    message = f"added channel {spec.name} (unix socket {spec.path or 'chosen by libvirt'})"
    if not any(c.get("type") == "virtio-serial" for c in devices.findall("controller")):
        # Indexes count per controller type: with no virtio-serial controller, 0 is
        # free whatever usb/pci/sata controllers hold.
        ctl = etree.Element("controller", {"type": "virtio-serial", "index": "0"})
        _insert(devices, ctl, _CONTROLLER_AFTER)
        message += " and a virtio-serial controller (index 0)"
    el = etree.Element("channel", type="unix")
    etree.SubElement(el, "source", mode="bind", **({"path": spec.path} if spec.path else {}))
    etree.SubElement(el, "target", type="virtio", name=spec.name)
    _insert(devices, el, _CHANNEL_AFTER)
    return XmlChange(doc.serialize(), True, message, _standalone(el))


def remove_channel(domain_xml: str | bytes, name: str) -> XmlChange:
    """Remove the channel(s) named ``name``; the virtio-serial controller stays."""
    doc = _Doc(domain_xml)
    devices = doc.root.find("devices")
    found = [] if devices is None else [
        el for el in devices.findall("channel") if channel_of(el).name == name
    ]  # fmt: skip
    if not found:
        return XmlChange(doc.text, False, f"no channel {name} to remove", None)
    device_xml = _standalone(found[0])
    for el in found:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = el.tail
        else:
            el.getparent().text = el.tail
        el.getparent().remove(el)
    return XmlChange(doc.serialize(), True, f"removed channel {name}", device_xml)


def xml_diff(old: str, new: str) -> str:
    """Unified diff from ``old`` to ``new`` ('' when equal), for --dry-run."""
    a, b = ([line + "\n" for line in text.splitlines()] for text in (old, new))
    return "".join(difflib.unified_diff(a, b, "current", "proposed"))


# -- parsing and serialising ------------------------------------------------


class _Doc:
    """The parsed tree plus the original text, to keep unchanged lines as they were.

    lxml re-serialises with its own quoting (attr="v", libvirt writes attr='v')
    and escaping; so the output takes every line lxml left alone from the
    original text and only the lines that changed from lxml.
    """

    def __init__(self, text: str | bytes):
        if not isinstance(text, str | bytes):
            raise UsageError(f"domain XML must be str or bytes, not {type(text).__name__}")
        try:
            text = text.decode("utf-8") if isinstance(text, bytes) else text
        except UnicodeDecodeError as exc:
            raise UsageError(f"domain XML is not UTF-8: {exc}") from None
        self.text = text
        match = _XML_DECL.match(text)  # lxml refuses str with an encoding declaration
        self.head = match.group() if match else text[: len(text) - len(text.lstrip())]
        self.body = text[len(self.head) :].rstrip()
        self.tail = text[len(self.head) + len(self.body) :]
        quotes = re.findall(r"""[\w:-]=(['"])""", self.body)
        self.single = quotes.count("'") > quotes.count('"')
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        try:
            root = etree.fromstring(self.body, parser)
        except etree.XMLSyntaxError as exc:
            raise UsageError(f"malformed domain XML: {exc.msg} (line {exc.lineno})") from None
        if root.tag != "domain":
            raise UsageError(f"not a domain XML document: the root element is <{root.tag}>")
        self.root, self.tree = root, root.getroottree()
        self.before = etree.tostring(self.tree, encoding="unicode").split("\n")

    def serialize(self) -> str:
        fix = _requote if self.single else str
        after = etree.tostring(self.tree, encoding="unicode").split("\n")
        orig = self.body.split("\n")
        if list(map(_indent, orig)) != list(map(_indent, self.before)):
            # The original's lines do not map one to one onto lxml's: take lxml's.
            return self.head + "\n".join(map(fix, after)) + self.tail
        out: list[str] = []
        matcher = difflib.SequenceMatcher(None, self.before, after, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            out += orig[i1:i2] if op == "equal" else map(fix, after[j1:j2])
        return self.head + "\n".join(out) + self.tail


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _ws_before(el: etree._Element) -> str | None:
    """The newline-and-indent before ``el`` (None if it has none; the root is at 0)."""
    if el.getparent() is None:
        return "\n"
    prev = el.getprevious()
    text = (prev.tail if prev is not None else el.getparent().text) or ""
    match = re.search(r"\n[ \t]*\Z", text)
    return match.group() if match else None


def _step(outer: str | None, inner: str | None) -> str:
    """The document's indentation step, from two nested indents."""
    if outer and inner and inner.startswith(outer) and len(inner) > len(outer):
        return inner[len(outer) :]
    return "  "


def _insert(parent: etree._Element, new: etree._Element, after: tuple) -> etree._Element:
    """Insert ``new`` after the last child of the first matching tag group, else last,
    copying the neighbours' whitespace."""
    kids = [c for c in parent if isinstance(c.tag, str)]
    anchor = next((m[-1] for group in after if (m := [c for c in kids if c.tag in group])), None)
    if anchor is None and len(parent):
        anchor = parent[-1]
    parent_ws = _ws_before(parent)
    if anchor is not None:
        ws = _ws_before(anchor)
        unit = _step(parent_ws, ws)
    else:
        up = parent.getparent()
        unit = _step(_ws_before(up) if up is not None else None, parent_ws)
        ws = parent_ws and parent_ws + unit
    if ws is not None and len(new):
        new.text = ws + unit
        for child in new:
            child.tail = ws + unit
        new[-1].tail = ws
    if anchor is None:
        parent.text = ws if ws is not None else parent.text
        new.tail = parent_ws
        parent.append(new)
    else:
        new.tail = anchor.tail
        if ws is not None:
            anchor.tail = ws
        anchor.addnext(new)
    return new


def _standalone(el: etree._Element) -> str:
    """``el`` alone, indented by two spaces, quoted the way libvirt quotes."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False)
    clean = etree.fromstring(etree.tostring(el, with_tail=False), parser)
    etree.indent(clean, space="  ")
    return _requote(etree.tostring(clean, encoding="unicode"))


_TOKEN = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[?!][^>]*>|<[^>]+>", re.S)


def _requote(xml: str) -> str:
    """Turn lxml's attr="v" into libvirt's attr='v' (values without a ' only)."""

    def fix(m: re.Match[str]) -> str:
        tag = m.group()
        return tag if tag[1] in "!?" else re.sub(r'="([^"\']*)"', r"='\1'", tag)

    return _TOKEN.sub(fix, xml)

"""Who would start an agent on a port: udev rules and systemd units on disk.

Read-only and text-based (no systemctl, no udevadm: the helper must work in
images where systemd is not running, and never block).

* :func:`udev_activations` lists the rules that ask systemd for a unit
  (``ENV{SYSTEMD_WANTS}``) on a ``virtio-ports`` device, with the
  ``ATTR{name}`` pattern they match;
* :func:`stock_unit` reads the distribution's ``qemu-guest-agent.service``
  (with drop-ins) and says which port it is bound to (``BindsTo=`` device)
  and which path its qemu-ga opens;
* :func:`check_stock` turns both into findings for a port.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from dataclasses import dataclass, field

from .procs import DEFAULT_PATHS, QGA_CONF_DEFAULT, parse_qga_args, read_qga_conf
from .report import ERROR, OK, WARNING, Report
from .roots import Roots, read_text

__all__ = [
    "STOCK_PORT",
    "STOCK_UNIT",
    "Activation",
    "StockUnit",
    "check_stock",
    "device_unit_path",
    "stock_unit",
    "udev_activations",
]

STOCK_UNIT = "qemu-guest-agent.service"
STOCK_PORT = "org.qemu.guest_agent.0"
RULE = (
    'SUBSYSTEM=="virtio-ports", ATTR{{name}}=="{name}", TAG+="systemd", '
    'ENV{{SYSTEMD_WANTS}}+="gagent-qga@%k.service"'
)
_KEY_RE = re.compile(r'\s*([A-Za-z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*')


@dataclass
class Activation:
    """One udev rule starting units for virtio ports named like ``pattern``."""

    file: str
    line: int
    pattern: str  # ATTR{name} glob ("*" when the rule does not look at the name)
    units: list[str]

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, alt) for alt in self.pattern.split("|"))


def _rule_lines(text: str) -> list[tuple[int, str]]:
    """Logical lines (backslash continuations joined) with their first line number."""
    out = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip() and not buf.lstrip().startswith("#"):
            out.append((start, buf))
        buf = ""
    return out


def _parse_rule(line: str) -> list[tuple[str, str | None, str, str]]:
    keys = []
    for part in line.split(","):
        m = _KEY_RE.fullmatch(part)
        if m:
            keys.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return keys


def udev_activations(roots: Roots) -> list[Activation]:
    """Rules wanting systemd units for virtio ports (a file in /etc masks /lib's)."""
    seen: dict[str, str] = {}
    for directory in roots.udev_rule_dirs():
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.endswith(".rules") and name not in seen:
                seen[name] = str(directory / name)
    found = []
    for name in sorted(seen):
        text = read_text(seen[name], limit=1 << 20) or ""
        for lineno, line in _rule_lines(text):
            keys = _parse_rule(line)
            subsystem = [v for k, _a, op, v in keys if k == "SUBSYSTEM" and op == "=="]
            if "virtio-ports" not in subsystem:
                continue
            pattern = next(
                (v for k, a, op, v in keys if k == "ATTR" and a == "name" and op == "=="), "*"
            )
            units = []
            for key, attr, op, value in keys:
                if key == "ENV" and attr == "SYSTEMD_WANTS" and op in ("=", "+=", ":="):
                    units += value.split()
            if units:
                found.append(Activation(seen[name], lineno, pattern, units))
    return found


def device_unit_path(unit: str) -> str | None:
    """``dev-virtio\\x2dports-X.device`` -> ``/dev/virtio-ports/X`` (systemd unescaping)."""
    if not unit.endswith(".device"):
        return None
    parts = unit[: -len(".device")].split("-")

    def unescape(s: str) -> str:
        return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)

    return "/" + "/".join(unescape(p) for p in parts)


@dataclass
class StockUnit:
    """The distribution's qemu-guest-agent.service, as written on disk."""

    file: str
    binds_to: list[str] = field(default_factory=list)  # device paths
    exec_path: str | None = None  # the path its qemu-ga opens
    exec_path_source: str = "default"

    @property
    def bound_ports(self) -> list[str]:
        prefix = "/dev/virtio-ports/"
        return [p[len(prefix) :] for p in self.binds_to if p.startswith(prefix)]

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "binds_to": self.binds_to,
            "path": self.exec_path,
            "path_source": self.exec_path_source,
        }


def _unit_files(roots: Roots, unit: str) -> list[str]:
    """The unit file in force, then its drop-ins (in name order)."""
    files = []
    for directory in roots.unit_dirs():
        path = directory / unit
        if path.is_file() or path.is_symlink():
            if os.path.realpath(path) == os.devnull:
                return []  # masked
            files.append(str(path))
            break
    dropins: dict[str, str] = {}
    for directory in roots.unit_dirs():
        d = directory / f"{unit}.d"
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in dropins:
                dropins[name] = str(d / name)
    return files + [dropins[n] for n in sorted(dropins)] if files else []


def stock_unit(roots: Roots) -> StockUnit | None:
    """Read qemu-guest-agent.service (None when not installed or masked)."""
    files = _unit_files(roots, STOCK_UNIT)
    if not files:
        return None
    binds: list[str] = []
    exec_start: str | None = None
    for path in files:
        section = ""
        for raw in (read_text(path) or "").splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line
                continue
            key, sep, value = line.partition("=")
            if not sep:
                continue
            key, value = key.strip(), value.strip()
            if section == "[Unit]" and key == "BindsTo":
                binds = [] if not value else binds + value.split()
            elif section == "[Service]" and key == "ExecStart":
                exec_start = value or None
    unit = StockUnit(files[0])
    unit.binds_to = [p for p in (device_unit_path(u) for u in binds) if p]
    if exec_start:
        try:
            argv = shlex.split(exec_start.lstrip("-@:+!"))
        except ValueError:
            argv = exec_start.split()
        args = parse_qga_args(argv)
        conf = read_qga_conf(roots, args.config or QGA_CONF_DEFAULT)
        method = args.method or conf.get("method") or "virtio-serial"
        if args.path:
            unit.exec_path, unit.exec_path_source = args.path, "ExecStart"
        elif conf.get("path"):
            unit.exec_path = conf["path"]
            unit.exec_path_source = f"config {args.config or QGA_CONF_DEFAULT}"
        else:
            unit.exec_path = DEFAULT_PATHS.get(method)
    return unit


def check_stock(report: Report, name: str, roots: Roots, served: bool) -> None:
    """Findings about the distribution's agent unit and udev's activations for ``name``."""
    unit = stock_unit(roots)
    rules = udev_activations(roots)
    report.facts["stock_unit"] = unit.as_dict() if unit else None
    report.facts["udev_activations"] = [
        {"file": a.file, "line": a.line, "name": a.pattern, "units": a.units} for a in rules
    ]
    fix = (
        f"keep {STOCK_UNIT} on {STOCK_PORT}: remove the override (systemctl revert "
        "qemu-guest-agent) or the path= line of /etc/qemu/qemu-ga.conf"
    )
    if unit is not None:
        prefix = "/dev/virtio-ports/"
        opens = unit.exec_path or ""
        opens_port = opens[len(prefix) :] if opens.startswith(prefix) else None
        if name != STOCK_PORT and (name in unit.bound_ports or opens_port == name):
            report.add(
                "stock-agent-on-port",
                ERROR,
                f"{STOCK_UNIT} ({unit.file}) is set to port {name}: it would fight "
                "gagent's agent for it",
                fix,
            )
        elif unit.bound_ports != [STOCK_PORT] or opens_port not in (STOCK_PORT, None):
            report.add(
                "stock-unit-binding",
                WARNING,
                f"{STOCK_UNIT} is bound to {', '.join(unit.binds_to) or 'no device'} and "
                f"opens {opens or '?'}",
                f"the stock unit should be bound to {STOCK_PORT} only: restore it "
                "(systemctl revert qemu-guest-agent)",
            )
        else:
            report.add("stock-unit", OK, f"{STOCK_UNIT} stays on {STOCK_PORT}")
    for rule in rules:
        if name != STOCK_PORT and rule.matches(name) and STOCK_UNIT in rule.units:
            report.add(
                "stock-agent-on-port",
                ERROR,
                f"udev rule {rule.file}:{rule.line} starts {STOCK_UNIT} for port {name}",
                f"remove that rule: {STOCK_UNIT} belongs to {STOCK_PORT}",
            )
    starting = sorted({u for r in rules if r.matches(name) for u in r.units})
    if starting:
        report.add("activation", OK, f"udev starts {', '.join(starting)} when {name} appears")
    elif not served and name != STOCK_PORT:
        report.add(
            "no-activation",
            WARNING,
            f"no udev rule starts an agent when port {name} appears",
            "install the gagent-guest package, or put in /etc/udev/rules.d/"
            f"61-gagent-local.rules: {RULE.format(name=name)}",
        )

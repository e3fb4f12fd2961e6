"""Processes: who holds a port open, and which qemu-ga serves which path.

A virtio port can be open by one process at a time (a second ``open`` gets
EBUSY), so the holder is found the way ``fuser`` does: the ``/proc/PID/fd/*``
links that point at the port's node.  Other users' fd tables are readable by
root only; the scan says when it could not see everything.

qemu-ga's transport comes from its command line (``-m/--method``,
``-p/--path``), else from its configuration file (``QGA_CONF`` in its
environment, ``-c/--config`` on newer agents, else ``/etc/qemu/qemu-ga.conf``,
group ``[general]``), else from the built-in defaults.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field

from .roots import Roots, read_text

__all__ = [
    "QGA_CONF_DEFAULT",
    "Agent",
    "Process",
    "QgaArgs",
    "find_agents",
    "holders",
    "parse_qga_args",
    "scan_processes",
]

QGA_CONF_DEFAULT = "/etc/qemu/qemu-ga.conf"
QGA_NAMES = ("qemu-ga", "qemu-guest-agent")
DEFAULT_PATHS = {
    "virtio-serial": "/dev/virtio-ports/org.qemu.guest_agent.0",
    "isa-serial": "/dev/ttyS0",
}
# qemu-ga 7.x-9.x options taking an argument (short and long forms).
_ARG_SHORT = set("mplfbtsac")
_ARG_LONG = {
    "method": "m", "path": "p", "logfile": "l", "pidfile": "f", "blacklist": "b",
    "block-rpcs": "b", "allow-rpcs": "a", "statedir": "t", "service": "s", "config": "c",
}  # fmt: skip


@dataclass
class Process:
    pid: int
    comm: str
    argv: list[str]
    fds: list[str] | None  # fd link targets; None when this user may not read them
    exe: str | None = None  # /proc/PID/exe's target; None when this user may not read it

    @property
    def program(self) -> str:
        """The program's file name: the executable when readable, else argv[0].

        Never the arguments, and the comm name only for a process without argv:
        both can name anything (``sh -c 'qemu-ga ...'``, a thread's prctl name).
        """
        if self.exe:
            return os.path.basename(self.exe)
        if self.argv:
            return os.path.basename(self.argv[0])
        return self.comm

    @property
    def is_qga(self) -> bool:
        return self.program in QGA_NAMES


@dataclass
class QgaArgs:
    method: str | None = None
    path: str | None = None
    config: str | None = None
    statedir: str | None = None
    fsfreeze_hook: str | None = None  # "" when -F is given without a path
    daemonize: bool = False


def parse_qga_args(argv: list[str]) -> QgaArgs:
    """The qemu-ga options that matter here, from its argv (program name first)."""
    out = QgaArgs()
    values: dict[str, str] = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name == "fsfreeze-hook":
                out.fsfreeze_hook = value
            elif name == "daemonize":
                out.daemonize = True
            elif name in _ARG_LONG:
                if not eq and i < len(argv):
                    value = argv[i]
                    i += 1
                values[_ARG_LONG[name]] = value
            continue
        if not arg.startswith("-") or arg == "-":
            continue
        # a cluster of short options: -dv, -pPATH, -p PATH, -F, -F/path
        j = 1
        while j < len(arg):
            opt = arg[j]
            rest = arg[j + 1 :]
            if opt == "F":
                out.fsfreeze_hook = rest
                break
            if opt == "d":
                out.daemonize = True
            if opt in _ARG_SHORT:
                if rest:
                    values[opt] = rest
                elif i < len(argv):
                    values[opt] = argv[i]
                    i += 1
                break
            j += 1
    out.method = values.get("m")
    out.path = values.get("p")
    out.config = values.get("c")
    out.statedir = values.get("t")
    return out


def read_qga_conf(roots: Roots, path: str) -> dict[str, str]:
    """The ``[general]`` group of a qemu-ga key file ({} when absent or unreadable)."""
    text = read_text(roots.map(path))
    if not text:
        return {}
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return {}
    return dict(parser["general"]) if parser.has_section("general") else {}


@dataclass
class Agent:
    """A running qemu-ga and the path it serves."""

    pid: int
    argv: list[str]
    method: str
    path: str  # guest path, as the agent was told
    source: str  # "argv", "config FILE" or "default"
    fds: list[str] | None = field(default=None, repr=False)

    def holds(self, node: str) -> bool | None:
        """Whether the agent has ``node`` open (None: its fds are unreadable)."""
        if self.fds is None:
            return None
        return node in self.fds

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "method": self.method,
            "path": self.path,
            "source": self.source,
            "argv": self.argv,
        }


def _read_argv(proc_dir: str) -> list[str]:
    raw = read_text(os.path.join(proc_dir, "cmdline"), limit=1 << 16) or ""
    return [a for a in raw.split("\0") if a] if raw else []


def _read_fds(proc_dir: str) -> list[str] | None:
    fd_dir = os.path.join(proc_dir, "fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None
    targets = []
    for name in names:
        try:
            targets.append(os.readlink(os.path.join(fd_dir, name)))
        except OSError:
            continue
    return targets


def _read_exe(proc_dir: str) -> str | None:
    try:
        target = os.readlink(os.path.join(proc_dir, "exe"))
    except OSError:  # another user's process, or a kernel thread
        return None
    return target[: -len(" (deleted)")] if target.endswith(" (deleted)") else target


def scan_processes(roots: Roots) -> list[Process]:
    """Every process with its argv and (when readable) open files."""
    try:
        pids = sorted(int(n) for n in os.listdir(roots.proc) if n.isdigit())
    except OSError:
        return []
    procs = []
    for pid in pids:
        base = os.path.join(roots.proc, str(pid))
        comm = (read_text(os.path.join(base, "comm")) or "").strip()
        if not comm and not os.path.isdir(base):
            continue  # exited meanwhile
        procs.append(Process(pid, comm, _read_argv(base), _read_fds(base), _read_exe(base)))
    return procs


def holders(procs: list[Process], node: str) -> tuple[list[Process], bool]:
    """Processes holding ``node`` open, and whether every fd table could be read."""
    found = [p for p in procs if p.fds is not None and node in p.fds]
    complete = all(p.fds is not None for p in procs)
    return found, complete


def _environ(roots: Roots, pid: int) -> dict[str, str]:
    raw = read_text(roots.proc / str(pid) / "environ") or ""
    env = {}
    for item in raw.split("\0"):
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
    return env


def find_agents(roots: Roots, procs: list[Process]) -> list[Agent]:
    """The running qemu-ga processes and the transport each one uses."""
    agents = []
    for proc in procs:
        if not proc.is_qga:
            continue
        args = parse_qga_args(proc.argv)
        conf_path = args.config or _environ(roots, proc.pid).get("QGA_CONF") or QGA_CONF_DEFAULT
        conf = read_qga_conf(roots, conf_path)
        method = args.method or conf.get("method") or "virtio-serial"
        if args.path:
            path, source = args.path, "argv"
        elif conf.get("path"):
            path, source = conf["path"], f"config {conf_path}"
        else:
            path, source = DEFAULT_PATHS.get(method, ""), "default"
        agents.append(Agent(proc.pid, proc.argv, method, path, source, proc.fds))
    return agents

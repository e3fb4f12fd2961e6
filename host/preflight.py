"""What a freeze would meet in a guest, read through its agent: the facts of a freeze preflight.

:func:`gather` asks the agent a handful of bounded questions (guest-info,
guest-fsfreeze-status, guest-get-fsinfo, a few small guest files); the caller
bounds the whole with its own deadline.  ``full=False`` is the cheap set that
``snapshot create`` and ``fsfreeze freeze`` ask before each freeze; ``full=True``
(``gagent fsfreeze check``) adds the freeze state, the mount table, the loop devices'
backing files and SELinux's mode (read from selinuxfs, as getenforce does; through
guest-exec's ``getenforce`` when the file commands are blocked and guest-exec is not).
Nothing here judges: :mod:`gagent.host.freeze_findings` turns the facts into findings.
Every question that cannot be answered (a command blocked with ``--block-rpcs``, a
missing file) is recorded as such, never raised: a preflight reports, it does not fail.

The dead-man's switch's deadline is parsed by the guest's own reader
(:func:`gagent.guest.deadman.parse_config`, standard library only), so host and
guest read ``deadman.conf`` by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gagent.commands import AgentCommands
from gagent.errors import AgentError, CommandUnavailable
from gagent.freeze import FREEZE, FREEZE_LIST, STATUS, THAW
from gagent.fs_types import FilesystemInfo
from gagent.guest.deadman import CONFIG as DEADMAN_CONFIG
from gagent.guest.deadman import parse_config

__all__ = [
    "DEADMAN_CONFIG", "FREEZE_COMMANDS", "HOOKS", "Deadman", "GuestFacts", "Mount",
    "gather", "parse_mounts", "read_guest_file",
]  # fmt: skip

#: The commands a freeze needs (the -list variant only with --mountpoint).
FREEZE_COMMANDS = (FREEZE, FREEZE_LIST, THAW, STATUS)
#: fsfreeze hooks a guest may run: the gagent-guest package's, and qemu-ga's default path.
HOOKS = ("/etc/gagent/fsfreeze-hook", "/etc/qemu/fsfreeze-hook")
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"
#: Bounds on what a preflight reads from one guest file.
READ_CHUNK = 65536
READ_LIMIT = 1 << 20


@dataclass(frozen=True)
class Mount:
    """One line of the guest's ``/proc/self/mounts`` (qemu-ga's view)."""

    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


@dataclass(frozen=True)
class Deadman:
    """The guest's freeze dead-man's switch as read through the agent.

    ``state``: ``on`` (``deadline`` seconds), ``off`` (deadline 0), ``absent`` (no
    ``deadman.conf``: the guest package is not installed) or ``unreadable`` (``reason``).
    """

    state: str
    deadline: int | None = None
    reason: str = ""


@dataclass
class GuestFacts:
    """What the agent told; None where it could not be asked (see ``problems``)."""

    route: str
    version: str | None = None
    #: command -> enabled (None: the agent does not implement it)
    commands: dict[str, bool | None] = field(default_factory=dict)
    status: str | None = None
    filesystems: list[FilesystemInfo] | None = None
    deadman: Deadman | None = None
    #: hook path -> present (None: could not tell)
    hooks: dict[str, bool | None] = field(default_factory=dict)
    mounts: list[Mount] | None = None
    #: loop device name (loop0) -> its backing file (None: unknown)
    loops: dict[str, str | None] = field(default_factory=dict)
    selinux: str | None = None
    #: question -> why it got no answer
    problems: dict[str, str] = field(default_factory=dict)

    def enabled(self, command: str) -> bool:
        return bool(self.commands.get(command))


class GuestFileMissing(Exception):
    """The guest has no such file (the agent's open said ENOENT)."""


async def read_guest_file(agent: AgentCommands, path: str, limit: int = READ_LIMIT) -> bytes:
    """A small guest file through guest-file-open/read/close (at most ``limit`` bytes).

    Raises :class:`GuestFileMissing` for a file that does not exist, and the
    agent's own errors (:class:`CommandUnavailable` when the file commands are blocked).
    """
    try:
        handle = await agent.file_open(path, "r")
    except AgentError as exc:
        if "No such file" in exc.desc or "not found" in exc.desc.lower():
            raise GuestFileMissing(path) from None
        raise
    data = b""
    try:
        while len(data) < limit:
            chunk = await agent.file_read(handle, min(READ_CHUNK, limit - len(data)))
            data += chunk.data
            if chunk.eof or not chunk.data:
                break
    finally:
        await agent.file_close(handle)
    return data


def parse_mounts(text: str) -> list[Mount]:
    """``/proc/self/mounts`` lines (octal escapes of space, tab, newline, backslash undone)."""

    def unescape(value: str) -> str:
        return value.encode().decode("unicode_escape") if "\\" in value else value

    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            found.append(
                Mount(unescape(fields[0]), unescape(fields[1]), fields[2],
                      tuple(fields[3].split(",")))
            )  # fmt: skip
    return found


def _why(exc: Exception) -> str:
    if isinstance(exc, CommandUnavailable):
        return f"{exc.command} is disabled or unknown in the guest's qemu-ga"
    if isinstance(exc, GuestFileMissing):
        return f"{exc} does not exist"
    return str(exc)


async def _read_deadman(agent: AgentCommands) -> Deadman:
    try:
        text = (await read_guest_file(agent, DEADMAN_CONFIG, 4096)).decode("utf-8", "replace")
    except GuestFileMissing:
        return Deadman("absent", reason=f"{DEADMAN_CONFIG} does not exist")
    except (AgentError, CommandUnavailable) as exc:
        return Deadman("unreadable", reason=_why(exc))
    deadline = parse_config(text, DEADMAN_CONFIG).deadline
    return Deadman("on" if deadline else "off", deadline)


async def _exists(agent: AgentCommands, path: str) -> bool:
    try:
        await agent.file_close(await agent.file_open(path, "r"))
    except AgentError as exc:
        if "No such file" in exc.desc:
            return False
        raise
    return True


async def gather(
    agent: AgentCommands, route: str, *, full: bool = False, filesystems: bool = True,
    hooks: bool = True,
) -> GuestFacts:  # fmt: skip
    """Ask the agent what a freeze needs to know (bound it with the caller's deadline);
    ``filesystems`` and ``hooks`` False leave those questions out (``full`` asks them)."""
    facts = GuestFacts(route)
    info = await agent.info()
    facts.version = info.version
    for name in (*FREEZE_COMMANDS, "guest-get-fsinfo", "guest-file-open", "guest-exec"):
        entry = info.commands.get(name)
        facts.commands[name] = None if entry is None else entry.enabled
    if full:  # (before a freeze, the freeze itself finds a frozen guest out: no round trip)
        if facts.enabled(STATUS):
            facts.status = str(await agent.freeze_state())
        else:
            facts.problems["status"] = f"{STATUS} is disabled or unknown"
        if facts.status == "frozen":
            return facts  # a frozen agent refuses the rest; the finding says how to thaw
    if filesystems or full:
        try:
            facts.filesystems = await agent.fsinfo()
        except (AgentError, CommandUnavailable) as exc:
            facts.problems["filesystems"] = _why(exc)
    facts.deadman = await _read_deadman(agent)
    for hook in HOOKS if hooks or full else ():
        try:
            facts.hooks[hook] = await _exists(agent, hook)
        except (AgentError, CommandUnavailable) as exc:
            facts.hooks[hook] = None
            facts.problems["hooks"] = _why(exc)
    if full:
        await _gather_more(agent, facts)
    return facts


async def _gather_more(agent: AgentCommands, facts: GuestFacts) -> None:
    try:
        facts.mounts = parse_mounts((await read_guest_file(agent, "/proc/self/mounts")).decode())
    except (AgentError, CommandUnavailable, GuestFileMissing) as exc:
        facts.problems["mounts"] = _why(exc)
    for mount in facts.mounts or []:
        name = mount.device.removeprefix("/dev/")
        if name.startswith("loop") and name not in facts.loops:
            try:
                backing = await read_guest_file(agent, f"/sys/block/{name}/loop/backing_file")
                facts.loops[name] = backing.decode(errors="replace").strip() or None
            except (AgentError, CommandUnavailable, GuestFileMissing) as exc:
                facts.loops[name] = None
                facts.problems[f"loop {name}"] = _why(exc)
    try:
        enforce = (await read_guest_file(agent, SELINUX_ENFORCE, 16)).strip()
        facts.selinux = "enforcing" if enforce == b"1" else "permissive"
    except GuestFileMissing:
        facts.selinux = "disabled"  # no selinuxfs: SELinux is off or not built in
    except (AgentError, CommandUnavailable) as exc:
        if facts.enabled("guest-exec"):
            await _selinux_by_exec(agent, facts)
        else:
            facts.problems["selinux"] = _why(exc)


async def _selinux_by_exec(agent: AgentCommands, facts: GuestFacts) -> None:
    """The file commands are blocked but guest-exec is not: ask getenforce (RHEL family)."""
    from gagent.programs import run_program  # (only here: it needs the exec commands)

    try:
        result = await run_program(agent, ["getenforce"])
    except (AgentError, CommandUnavailable) as exc:
        facts.problems["selinux"] = _why(exc)
        return
    mode = result.stdout.decode(errors="replace").strip().lower()
    if result.exit_code == 0 and mode in ("enforcing", "permissive", "disabled"):
        facts.selinux = mode
    else:
        facts.problems["selinux"] = f"getenforce answered {mode or result.exit_code!r}"

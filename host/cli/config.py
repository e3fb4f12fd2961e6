"""gagent's configuration file, and ``gagent config show``.

The file (TOML) holds what would otherwise be typed on every run::

    connect = "qemu:///system"       # -c/--connect (LIBVIRT_DEFAULT_URI, when set, wins)
    channel = "org.gagent.agent.0"   # --channel, and channel add/remove --name
    db = "/var/lib/gagent/inventory.sqlite3"   # --db
    hosts-file = "/etc/gagent/hosts"           # --hosts-file

    [timeout]        # --timeout, in seconds (0: none)
    default = 30     # every command's
    snapshot = 600   # the commands under 'gagent snapshot' (more specific: wins)

    [inventory]      # the inventory commands' own bounds, in seconds
    agent-timeout = 5     # --agent-timeout: each guest's agent (> 0)
    host-timeout = 60     # --host-timeout: each hypervisor, connect and list (> 0)
    busy-timeout = 30     # --busy-timeout: another scan's transaction (0: none)

Files: ``$GAGENT_CONFIG`` alone when set (it must exist; ``/dev/null`` reads
nothing), else ``$XDG_CONFIG_HOME/gagent/config.toml`` (``~/.config`` when
unset) over ``/etc/gagent/config.toml``, key by key.  A flag given on the
command line wins over the file, the file over the built-in default: the
values become the defaults of the commands' own options through click's
``default_map`` (:func:`gagent.host.cli.options.apply_global_options`).

A file is read (and tomllib imported) only when it exists: one-shot commands
stay light.  An unknown key or a value of the wrong type is a usage error
(exit 2) naming the file and the key.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from gagent.errors import UsageError

from .common import Output

__all__ = ["Setting", "config_files", "config_group", "file_values", "load_settings"]

#: Names one file explicitly (tests, a wrapper): then no other file is read.
CONFIG_ENV = "GAGENT_CONFIG"
SYSTEM_CONFIG = Path("/etc/gagent/config.toml")
#: The keys holding a string, and the option each is the default of.
STRING_KEYS = {"connect": "--connect", "channel": "--channel", "db": "--db",
               "hosts-file": "--hosts-file"}  # fmt: skip
#: The commands whose --timeout the [timeout] table may set on their own (each has a --timeout).
TIMEOUT_GROUPS = ("agent", "channel", "fsfreeze", "migrate", "migrate-check", "snapshot",
                  "status", "thaw", "watch")  # fmt: skip
#: The [inventory] table's keys: each is the default of the inventory option of that name,
#: and whether 0 is allowed.
INVENTORY_KEYS = {"agent-timeout": False, "host-timeout": False, "busy-timeout": True}
#: What each setting is when no file or flag gives it.
DEFAULTS = {
    "connect": "$LIBVIRT_DEFAULT_URI, else libvirt's default",
    "channel": "org.gagent.agent.0",
    "db": "$XDG_DATA_HOME/gagent/inventory.sqlite3",
    "hosts-file": "(none)",
    "timeout.default": "each command's own",
    "inventory.agent-timeout": "5",
    "inventory.host-timeout": "60",
    "inventory.busy-timeout": "30",
}


@dataclass(frozen=True)
class Setting:
    """One value of a configuration file, and the file it came from."""

    value: Any
    source: str


def config_files() -> list[Path]:
    """The files read, the one that wins first."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return [Path(explicit)]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [Path(base) / "gagent" / "config.toml", SYSTEM_CONFIG]


def load_settings() -> dict[str, Setting]:
    """Every setting of the files (``connect``, ``timeout.snapshot``...), checked."""
    files = config_files()
    if os.environ.get(CONFIG_ENV) and not files[0].exists():
        raise UsageError(f"{CONFIG_ENV} names {files[0]}, which does not exist: fix or unset it")
    settings: dict[str, Setting] = {}
    for path in reversed(files):  # the system's first: the user's overrides it
        if path.exists():
            settings.update(_read(path))
    return settings


def _read(path: Path) -> dict[str, Setting]:
    import tomllib

    try:
        with path.open("rb") as file:
            table = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from None
    where = str(path)
    found: dict[str, Setting] = {}
    for key, value in table.items():
        if key in STRING_KEYS:
            if not isinstance(value, str) or not value:
                raise UsageError(f"{path}: {key} must be a non-empty string, not {value!r}")
            if key in ("db", "hosts-file"):
                value = os.path.expanduser(value)
            found[key] = Setting(value, where)
        elif key == "timeout":
            table = value if isinstance(value, dict) else {"default": value}
            for name, seconds in table.items():
                found[f"timeout.{name}"] = Setting(_seconds(path, name, seconds), where)
        elif key == "inventory":
            if not isinstance(value, dict):
                raise UsageError(f"{path}: inventory must be a table ([inventory]), not {value!r}")
            for name, seconds in value.items():
                found[f"inventory.{name}"] = Setting(_inventory_seconds(path, name, seconds), where)
        else:
            known = ", ".join([*STRING_KEYS, "timeout", "[inventory]"])
            raise UsageError(f"{path}: unknown key {key!r} (known: {known})")
    return found


def _seconds(path: Path, name: str, value: Any) -> float:
    if name != "default" and name not in TIMEOUT_GROUPS:
        known = ", ".join(("default", *TIMEOUT_GROUPS))
        raise UsageError(f"{path}: unknown key 'timeout.{name}' (known: {known})")
    if not _finite_number(value) or value < 0:
        raise UsageError(
            f"{path}: timeout.{name} must be a number of seconds >= 0 (0: none), not {value!r}"
        )
    return float(value)


def _inventory_seconds(path: Path, name: str, value: Any) -> float:
    if name not in INVENTORY_KEYS:
        known = ", ".join(f"inventory.{key}" for key in INVENTORY_KEYS)
        raise UsageError(f"{path}: unknown key 'inventory.{name}' (known: {known})")
    zero_allowed = INVENTORY_KEYS[name]
    if not _finite_number(value) or value < 0 or (value == 0 and not zero_allowed):
        bound = ">= 0 (0: none)" if zero_allowed else "> 0"
        raise UsageError(
            f"{path}: inventory.{name} must be a number of seconds {bound}, not {value!r}"
        )
    return float(value)


def _finite_number(value: Any) -> bool:
    """An int or float, not a bool, and not nan or inf (TOML has both)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def file_values(settings: dict[str, Setting], command: str) -> dict[str, Any]:
    """The option defaults (by long name) the files give to subcommand ``command``.

    ``connect`` is left out while ``LIBVIRT_DEFAULT_URI`` is set (as for virsh, the
    environment wins over a configuration file).
    """
    values = {
        option: settings[key].value
        for key, option in STRING_KEYS.items()
        if key in settings and not (key == "connect" and os.environ.get("LIBVIRT_DEFAULT_URI"))
    }
    if command == "channel" and "channel" in settings:  # channel add/remove --name
        values["--name"] = settings["channel"].value
    for key in ("timeout.default", f"timeout.{command}"):
        if key in settings:
            values["--timeout"] = settings[key].value
    if command == "inventory":
        for name in INVENTORY_KEYS:
            if f"inventory.{name}" in settings:
                values[f"--{name}"] = settings[f"inventory.{name}"].value
    return values


# ------------------------------------------------------------- gagent config


@click.group("config")
def config_group() -> None:
    """Show gagent's configuration (files, environment, defaults)."""


@config_group.command("show")
@click.option("-c", "--connect", metavar="URI", help="As given to other commands: shown as 'flag'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")  # (options.py imports us)
@click.pass_context
def config_show(ctx: click.Context, connect: str | None, as_json: bool) -> None:
    """The merged configuration, and where each value came from (flag, env, file, default).

    Files read, the first winning: $GAGENT_CONFIG alone when set, else
    $XDG_CONFIG_HOME/gagent/config.toml (~/.config when unset) and /etc/gagent/config.toml.
    """
    settings = load_settings()
    shown: dict[str, dict[str, Any]] = {}
    groups = sorted(k for k in settings if k.startswith("timeout.") and k != "timeout.default")
    inventory = [f"inventory.{name}" for name in INVENTORY_KEYS]
    for key in [*STRING_KEYS, "timeout.default", *groups, *inventory]:
        if key in settings:
            shown[key] = {"value": settings[key].value, "source": settings[key].source}
        else:
            shown[key] = {"value": None, "source": "default", "default": DEFAULTS[key]}
    env_uri = os.environ.get("LIBVIRT_DEFAULT_URI")
    if env_uri:
        shown["connect"] = {"value": env_uri, "source": "env LIBVIRT_DEFAULT_URI"}
    given = ctx.get_parameter_source("connect") is ParameterSource.COMMANDLINE
    if connect and (given or getattr(ctx.find_root().obj, "connect", None)):
        shown["connect"] = {"value": connect, "source": "flag"}  # its own -c, or gagent's
    files = [{"path": str(path), "read": path.exists()} for path in config_files()]
    Output(as_json).emit({"settings": shown, "files": files}, _describe)


def _describe(value: dict[str, Any]) -> str:
    from .render import format_table

    rows = [
        (key, s["default"] if s["value"] is None else s["value"], s["source"])
        for key, s in value["settings"].items()
    ]
    files = ", ".join(f"{f['path']} ({'read' if f['read'] else 'absent'})" for f in value["files"])
    return format_table(["setting", "value", "source"], rows) + f"\nfiles: {files}"

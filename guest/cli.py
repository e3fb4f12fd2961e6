"""The ``gagent-guest`` command line (argparse: the guest has no click).

::

    gagent-guest check [--port NAME | --serial DEV] [--json]
    gagent-guest probe [--port NAME | --serial DEV] [--timeout S] [--json]
    gagent-guest ports [--json]

Exit codes: 0 healthy / probe answered; 1 not healthy / no complete probe;
2 bad usage (an invalid port name, a --serial device that is no serial line or
virtio port); 3 the port cannot be used (missing, held, no permission); 4 not
inside a VM (no virtio device, no hypervisor).  Errors are one line on stderr
(or a JSON object with --json) with the fix in parentheses.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from . import __version__
from .check import DEFAULT_PORT, NOT_A_VM_HINT, check_port, describe, find_port
from .procs import holders, scan_processes
from .report import INFO, Finding
from .roots import PortIO, Roots
from .sysfs import kernel_state, list_ports
from .targets import BadTarget, check_port_name, classify_serial

__all__ = ["main"]

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_A_VM = 4
EXIT_CODES_HELP = (
    "exit status: 0 healthy (probe: answered), 1 not healthy (probe: no complete round), "
    "2 bad usage (invalid --port name; --serial not a serial line or virtio port), "
    "3 the port cannot be used (missing, held, no permission), 4 not inside a VM."
)


def _roots(args: argparse.Namespace) -> Roots:
    return Roots.under(args.root) if args.root else Roots()


def _emit(args: argparse.Namespace, value: object, text: str) -> None:
    if args.json:
        print(json.dumps(value, indent=2, default=str), flush=True)
    else:
        print(text, flush=True)


def _resolve_target(args: argparse.Namespace) -> str | None:
    """Validate --port/--serial (raises BadTarget); a virtio port given as --serial
    becomes --port NAME.  Returns a note saying so, or None."""
    if args.serial:
        target = classify_serial(args.serial, _roots(args))
        if target is None or target.kind != "virtio-port":
            return None
        note = (
            f"{args.serial} is the virtio port {target.port_name} ({target.kernel_name}): "
            f"checked as --port {target.port_name}"
        )
        args.port, args.serial = target.port_name, None
        return note
    check_port_name(args.port)
    return None


def cmd_check(args: argparse.Namespace) -> int:
    try:
        note = _resolve_target(args)
    except BadTarget as exc:
        return _fail(args, str(exc), exc.hint, EXIT_USAGE)
    if args.serial:
        from .serialcheck import check_serial

        report = check_serial(args.serial, roots=_roots(args))
    else:
        report = check_port(args.port, roots=_roots(args), timeout=args.timeout)
    if note:
        report.findings.insert(0, Finding("serial-is-port", INFO, note))
    _emit(args, report.as_dict(), report.to_text())
    if report.outcome == "not-a-vm":
        return EXIT_NOT_A_VM
    return EXIT_OK if report.healthy else EXIT_UNHEALTHY


def cmd_ports(args: argparse.Namespace) -> int:
    roots = _roots(args)
    ports = list_ports(roots)
    procs = scan_processes(roots)
    rows = []
    lines = []
    for p in ports:
        held, _ = holders(procs, p.node)
        rows.append({**p.as_dict(), "holders": [{"pid": h.pid, "comm": h.comm} for h in held]})
        lines.append(
            f"{p.name or '(unnamed)':<32} {p.node:<16} link {p.link_state or '-':<8} "
            f"{describe(held) if held else 'free'}"
        )
    _emit(args, rows, "\n".join(lines) or "no virtio ports")
    return EXIT_OK


def _fail(args: argparse.Namespace, message: str, hint: str, code: int) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": message, "hint": hint}), flush=True)
    else:
        print(f"gagent-guest: error: {message} ({hint})", file=sys.stderr, flush=True)
    return code


def _open_probe_fd(args: argparse.Namespace) -> tuple[int, str, object]:
    """(fd, description, object to close) for the probe; raises _Unavailable."""
    roots = _roots(args)
    if args.serial:
        from .serialcheck import open_serial

        try:
            port = open_serial(args.serial)
        except ImportError:
            raise _Unavailable("pyserial is not installed", "apt install python3-serial") from None
        except OSError as exc:
            raise _Unavailable(
                f"cannot open {args.serial}: {exc.strerror or exc}",
                "check the device (a virtio port? use --port NAME)",
            ) from None
        fd = port.fileno()
        os.set_blocking(fd, False)
        return fd, args.serial, port
    ports = list_ports(roots)
    port = find_port(ports, args.port)
    outside = None if port else kernel_state(roots).not_a_vm()
    if outside:
        raise _Unavailable(f"not inside a VM ({outside})", NOT_A_VM_HINT, EXIT_NOT_A_VM)
    if port is None:
        names = ", ".join(p.name for p in ports if p.name) or "none"
        raise _Unavailable(
            f"no virtio port named {args.port} (ports here: {names})",
            f"add one on the host: gagent channel add DOMAIN --name {args.port}",
        )
    try:
        fd = PortIO().open(roots.map(port.node))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            held, _ = holders(scan_processes(roots), port.node)
            who = describe(held) if held else "another process"
            raise _Unavailable(
                f"{port.node} ({args.port}) is held by {who}",
                "probe a port no agent holds (an agent would take the probe for a bad "
                "command): add one on the host, e.g. gagent channel add DOMAIN --name "
                "org.gagent.probe.0",
            ) from None
        raise _Unavailable(
            f"cannot open {port.node}: {exc.strerror or exc}", "run as root"
        ) from None
    return fd, f"{port.node} ({args.port})", None


class _Unavailable(Exception):
    def __init__(self, message: str, hint: str, code: int = EXIT_UNAVAILABLE):
        super().__init__(message)
        self.hint = hint
        self.code = code


def cmd_probe(args: argparse.Namespace) -> int:
    from .probe import serve_probe

    try:
        _resolve_target(args)
    except BadTarget as exc:
        return _fail(args, str(exc), exc.hint, EXIT_USAGE)
    try:
        fd, what, holder = _open_probe_fd(args)
    except _Unavailable as exc:
        return _fail(args, str(exc), exc.hint, exc.code)
    say = (lambda _line: None) if args.json else (lambda line: print(line, flush=True))
    name = (args.serial and f"--socket PATH (the {args.serial} backend)") or f"--name {args.port}"
    say(
        f"gagent-guest probe: listening on {what} for up to {args.timeout:g} s; "
        f"on the host run: gagent channel probe DOMAIN {name}"
    )
    try:
        outcome = serve_probe(fd, timeout=args.timeout, say=say)
    finally:
        if holder is not None:
            holder.close()  # type: ignore[attr-defined]
        else:
            os.close(fd)
    rtts = [r.guest_rtt_ns / 1e6 for r in outcome.rounds]
    summary = {
        "ok": outcome.ok,
        "end": outcome.end,
        "rounds": [r.as_dict() for r in outcome.rounds],
        "host_seen": outcome.host_seen,
        "junk_lines": outcome.junk_lines,
    }
    if outcome.ok:
        text = (
            f"{len(rtts)} probe(s) answered; round trip here min/avg/max "
            f"{min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/{max(rtts):.3f} ms"
        )
    elif outcome.end == "error":
        text = f"probe failed: {outcome.detail}"
    elif outcome.host_seen:
        text = "the host connected but no probe round completed before the timeout"
    else:
        text = f"no probe from the host within {args.timeout:g} s"
    _emit(args, summary, text)
    return EXIT_OK if outcome.ok else EXIT_UNHEALTHY


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gagent-guest",
        description="Guest side of gagent: check the agent channel, answer host probes.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"gagent-guest {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser, *, port_help: str) -> None:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--port", default=DEFAULT_PORT, metavar="NAME", help=port_help)
        where.add_argument(
            "--serial", metavar="DEV", help="a serial line instead (e.g. /dev/ttyS1; pyserial)"
        )
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--root", type=Path, help=argparse.SUPPRESS)  # tests: fake /sys /dev...

    check = sub.add_parser(
        "check", help="is the agent channel usable here? (exit 0 if so)", epilog=EXIT_CODES_HELP
    )
    common(check, port_help=f"virtio port name (default {DEFAULT_PORT})")
    check.add_argument(
        "--timeout", type=float, default=0.2, help="seconds to poll the port (default 0.2)"
    )
    check.set_defaults(func=cmd_check)

    probe = sub.add_parser(
        "probe", help="answer the host's probes (gagent channel probe)", epilog=EXIT_CODES_HELP
    )
    common(probe, port_help=f"virtio port no agent holds (default {DEFAULT_PORT})")
    probe.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait in all (default 60)"
    )
    probe.set_defaults(func=cmd_probe)

    ports = sub.add_parser("ports", help="list the virtio ports and who holds them")
    ports.add_argument("--json", action="store_true", help="print JSON")
    ports.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ports.set_defaults(func=cmd_ports)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "timeout", 1.0) < 0:
        parser.error("--timeout must not be negative")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("gagent-guest: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_UNHEALTHY


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

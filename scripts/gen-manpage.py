#!/usr/bin/env python3
"""Write gagent(1), in roff, from the CLI itself (click's command tree).

    scripts/gen-manpage.py [OUTPUT]      (default: packaging/man/gagent.1; - for stdout)

Every command and group, with its usage, help and options, as ``gagent CMD
--help`` shows them, and the exit codes of ``gagent --help``.  The output
depends on nothing but the code (no date, no terminal width, no environment):
tests/scripts/test_gen_manpage.py regenerates it and compares it with the
committed file, so the page cannot drift from the CLI.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

# No configuration file of this machine or user may change a default shown.
os.environ["GAGENT_CONFIG"] = os.devnull

import click

from gagent.host.cli import EXIT_CODES, cli

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "packaging" / "man" / "gagent.1"

ENVIRONMENT = {
    "LIBVIRT_DEFAULT_URI": "The libvirt URI when no -c/--connect is given.",
    "GAGENT_CONFIG": "The configuration file to read instead of "
    "$XDG_CONFIG_HOME/gagent/config.toml and /etc/gagent/config.toml.",
    "GAGENT_STATE_DIR": "Where snapshot records are kept (default /var/lib/gagent, or "
    "$XDG_STATE_HOME/gagent for other users than root).",
    "NO_COLOR": "When set and not empty, nothing is coloured (colour is used only on a terminal).",
    "_GAGENT_COMPLETE": "Shell completion (click's): "
    'eval "$(_GAGENT_COMPLETE=bash_source gagent)"; zsh_source and fish_source for those shells.',
}


def escape(text: str) -> str:
    """``text`` safe in roff: backslashes, hyphens, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def paragraphs(help_text: str) -> list[str]:
    """Help text as roff paragraphs; click's ``\\b`` paragraphs stay unfilled."""
    out: list[str] = []
    for block in inspect.cleandoc(help_text).split("\n\n"):
        lines = block.split("\n")
        if lines[0].strip() == "\b":
            out += [".PP", ".nf", *(escape(line) for line in lines[1:]), ".fi"]
        else:
            out += [".PP", escape(" ".join(line.strip() for line in lines))]
    return out


def describe(command: click.Command, ctx: click.Context, out: list[str]) -> None:
    """``command``'s section, then its subcommands' (sorted), depth first."""
    pieces = " ".join(command.collect_usage_pieces(ctx))
    out += [".SS " + escape(f'"{ctx.command_path}"'), ".B " + escape(ctx.command_path)]
    if pieces:
        out.append(escape(pieces))
    out += paragraphs(command.help or "")
    records = [
        record
        for param in command.get_params(ctx)
        if (record := param.get_help_record(ctx)) and "--help" not in record[0]
    ]
    for opts, help_text in records:
        out += [".TP", ".B " + escape(opts), escape(help_text) if help_text else ""]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                describe(sub, click.Context(sub, info_name=name, parent=ctx), out)


def manpage() -> str:
    ctx = click.Context(cli, info_name="gagent")
    summary = (cli.help or "").strip().splitlines()[0].rstrip(".")
    out = [
        '.TH GAGENT 1 "" "gagent" "User Commands"',
        ".SH NAME",
        "gagent \\- " + escape(summary[0].lower() + summary[1:]),
        ".SH SYNOPSIS",
        ".B gagent",
        escape(" ".join(cli.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        escape(summary) + ".",
        "Domains are addressed as with virsh (name, UUID or ID) on the connection of",
        ".B \\-c",
        "(else $LIBVIRT_DEFAULT_URI, else libvirt's default).",
        "The options of",
        ".B gagent",
        "itself (before the command) become the defaults of the command's own.",
        ".SH COMMANDS",
    ]
    describe(cli, ctx, out)
    out.append(".SH EXIT STATUS")
    for code, meaning in EXIT_CODES.items():
        out += [".TP", f".B {code}", escape(meaning)]
    out.append(".SH ENVIRONMENT")
    for name, meaning in ENVIRONMENT.items():
        out += [".TP", ".B " + escape(name), escape(meaning)]
    out += [
        ".SH SEE ALSO",
        ".BR virsh (1),",
        ".BR qemu\\-ga (8),",
        ".BR gagent\\-guest (1)",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    target = argv[0] if argv else str(DEFAULT_OUTPUT)
    text = manpage()
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

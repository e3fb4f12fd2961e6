"""Many domains in one call: ``--domains A,B,C`` and ``--all`` for ``agent`` and ``status``.

One libvirt connection is shared by every domain (each still gets its own
domain session, :func:`gagent.host.session.open_domain`); the domains run
concurrently, at most ``--concurrency`` at a time, each under its own deadline
(``--timeout``): a hung agent, a dead socket or a stopped domain is reported on
its own line and delays no other domain past that deadline.

Output, one line per domain as each finishes: ``NAME: RESULT`` (or ``NAME:
error: WHAT (FIX)``), or with ``--json`` one JSON object per line::

    {"domain": "vm1", "ok": true, "result": ..., "exit": 0, "ms": 1.9}
    {"domain": "vm2", "ok": false, "error": "...", "exit": 3, "ms": 0.4}

The command's exit code is the highest of the domains' (0 when all succeeded).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import click

from gagent.errors import GagentError, UsageError

from .common import CommandTimeout, deadline_of, run_command
from .render import _cell, json_result, render

__all__ = ["DEFAULT_CONCURRENCY", "Outcome", "fan_out_options", "parse_domains", "run_many"]

DEFAULT_CONCURRENCY = 16

#: ``work(session)`` -> (result, exit code): what one domain does in its session.
Work = Callable[[Any], Awaitable[tuple[Any, int]]]


@dataclass
class Outcome:
    """How one domain's command ended."""

    domain: str
    exit: int
    ms: float
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """It ended with exit 0 (a status report of an unreachable agent is a result, exit 3:
        not ok, as the same command on one domain)."""
        return self.error is None and self.exit == 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"domain": self.domain, "ok": self.ok}
        if self.error is None:
            out["result"] = json_result(self.result)
        else:
            out["error"] = self.error
        out["exit"] = self.exit
        out["ms"] = round(self.ms, 3)
        return out


def fan_out_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--domains``, ``--all`` and ``--concurrency``, for a command that takes them."""
    func = click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=DEFAULT_CONCURRENCY,
        show_default=True,
        help="With --domains/--all: how many domains at a time.",
    )(func)
    func = click.option(
        "--all",
        "all_running",
        is_flag=True,
        help="Every running domain of the connection (one line each; --timeout per domain).",
    )(func)
    return click.option(
        "--domains",
        metavar="A,B,...",
        help="These domains (names, UUIDs or IDs), concurrently (--timeout per domain).",
    )(func)


def parse_domains(text: str | None) -> list[str] | None:
    """``A,B,C`` -> [A, B, C] (None when not given); empty names are refused."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UsageError(f"--domains wants names separated by commas, like vm1,vm2, not {text!r}")
    return list(dict.fromkeys(names))  # each domain once, in the order given


def run_many(
    connect: str | None,
    domains: list[str] | None,
    *,
    concurrency: int,
    seconds: float | None,
    work: Work,
    as_json: bool,
    human: Callable[[Outcome], str],
) -> int:
    """Run ``work`` on ``domains`` (None: every running domain), print a line each as it
    ends, and return the highest exit code."""
    outcomes = run_command(
        lambda: _fan_out(connect, domains, concurrency, seconds, work, as_json, human),
        seconds=None,  # each domain has its own deadline; listing them has one too
        target="the domains",
    )
    return max((o.exit for o in outcomes), default=0)


async def _fan_out(
    connect: str | None,
    domains: list[str] | None,
    concurrency: int,
    seconds: float | None,
    work: Work,
    as_json: bool,
    human: Callable[[Outcome], str],
) -> list[Outcome]:
    import trio  # here: ``gagent agent --socket S ping`` imports this module, not trio

    from gagent.host.session import open_domain
    from gagent.host.virt import open_hypervisor
    from gagent.host.virt_calls import running_domains

    from . import exit_code_for

    def emit(outcome: Outcome) -> None:
        line = json.dumps(outcome.to_json()) if as_json else human(outcome)
        click.echo(line)
        sys.stdout.flush()  # a script reading the lines sees each domain as it ends

    libvirt = f"libvirt ({connect or 'the default URI'})"
    with deadline_of(seconds, libvirt):
        hypervisor = await open_hypervisor(connect)
    outcomes: list[Outcome] = []
    async with hypervisor:
        # (label, what to look up): the user's own words, or each running domain's name
        # and UUID (a name that reads as an ID or UUID must not reach another domain)
        targets = [(ref, ref) for ref in domains or ()]
        if domains is None:
            with deadline_of(seconds, f"{libvirt} to list the domains"):
                targets = await running_domains(hypervisor.conn)
        limiter = trio.CapacityLimiter(concurrency)

        async def one(label: str, ref: str) -> None:
            async with limiter:
                start = time.perf_counter()
                try:
                    with deadline_of(seconds, f"domain {label}"):
                        async with open_domain(ref, hypervisor=hypervisor) as session:
                            result, code = await work(session)
                    outcome = Outcome(label, code, _ms(start), result=result)
                except trio.TooSlowError:  # an inner deadline of work's own
                    error = CommandTimeout(seconds or 0, f"domain {label}")
                    outcome = Outcome(label, exit_code_for(error), _ms(start), error=str(error))
                except GagentError as exc:  # CommandTimeout of deadline_of too
                    outcome = Outcome(label, exit_code_for(exc), _ms(start), error=str(exc))
            outcomes.append(outcome)
            emit(outcome)

        async with trio.open_nursery() as nursery:
            for label, ref in targets:
                nursery.start_soon(one, label, ref)
    return outcomes


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def one_line(value: Any, view: Callable[[Any], str] | None = None) -> str:
    """A result on one line: its usual rendering when that is one line, else compact."""
    text = (view or render)(value)
    if "\n" not in text:
        return text
    return _cell(value)


def human_line(outcome: Outcome, view: Callable[[Any], str] | None = None) -> str:
    if outcome.error is None:
        text = one_line(outcome.result, view)
    else:
        text = f"error: {outcome.error}"
    return f"{outcome.domain}: " + text.replace("\n", " ")  # one line, whatever it holds

"""What every CLI command shares: options, running trio, printing results."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import trio

from gagent.errors import UsageError

from .render import dumps, render

T = TypeVar("T")

_deadline: dict[str, Any] = {"seconds": 0.0, "target": "?"}


def deadline_context() -> tuple[float, str]:
    """The deadline and target of the last timed run (for the timeout message)."""
    return _deadline["seconds"], _deadline["target"]


def run_with_deadline(func: Callable[[], Awaitable[T]], *, seconds: float | None, target: str) -> T:
    """trio.run ``func`` under an overall deadline (None or 0: no deadline)."""
    _deadline.update(seconds=seconds or 0.0, target=target)

    async def bounded() -> T:
        if not seconds:
            return await func()
        with trio.fail_after(seconds):
            return await func()

    return trio.run(bounded)


@dataclass
class Output:
    as_json: bool

    def emit(self, value: Any, human: Callable[[Any], str] | None = None) -> None:
        if self.as_json:
            click.echo(dumps(value))
        else:
            click.echo((human or render)(value))


def parse_json_object(text: str | None, what: str) -> dict[str, Any] | None:
    """Parse the JSON arguments of ``call``; a clear UsageError when malformed."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object like '{{\"key\": 1}}', not {text!r}")
    return value

"""Findings and the report of ``gagent-guest check``: data, JSON and the human text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ERROR", "INFO", "OK", "SEVERITIES", "WARNING", "Finding", "Report"]

OK = "ok"
INFO = "info"
WARNING = "warning"
ERROR = "error"
SEVERITIES = (OK, INFO, WARNING, ERROR)


@dataclass
class Finding:
    """One thing the check found; ``hint`` says what to do about it."""

    code: str  # stable identifier, e.g. "host-disconnected"
    severity: str  # ok, info, warning or error
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class Report:
    """Everything ``check`` found about one port (or serial line)."""

    target: str  # the port name, or the serial device
    kind: str = "virtio"  # "virtio" or "serial"
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, code: str, severity: str, message: str, hint: str = "") -> Finding:
        finding = Finding(code, severity, message, hint)
        self.findings.append(finding)
        return finding

    @property
    def healthy(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def outcome(self) -> str:
        """The verdict: healthy, unhealthy, or not-a-vm (the helper ran outside any guest)."""
        if "not-a-vm" in self.codes():
            return "not-a-vm"
        return "healthy" if self.healthy else "unhealthy"

    def codes(self, severity: str | None = None) -> list[str]:
        return [f.code for f in self.findings if severity is None or f.severity == severity]

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "outcome": self.outcome,
            "kind": self.kind,
            "target": self.target,
            "findings": [f.as_dict() for f in self.findings],
            **self.facts,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False, default=str)

    def to_text(self) -> str:
        what = "port" if self.kind == "virtio" else "serial line"
        lines = [f"gagent-guest check: {what} {self.target}"]
        for f in self.findings:
            label = f.severity.upper() if f.severity in (ERROR, WARNING) else f.severity
            lines.append(f"  {label:<8}{f.message}")
            if f.hint:
                lines.append(f"  {'':<8}fix: {f.hint}")
        errors = len(self.codes(ERROR))
        warnings = len(self.codes(WARNING))
        if self.outcome == "not-a-vm":
            lines.append("not inside a VM")
            return "\n".join(lines)
        verdict = "healthy" if self.healthy else "NOT healthy"
        extra = []
        if errors:
            extra.append(f"{errors} error{'s' * (errors != 1)}")
        if warnings:
            extra.append(f"{warnings} warning{'s' * (warnings != 1)}")
        lines.append(verdict + (f" ({', '.join(extra)})" if extra else ""))
        return "\n".join(lines)

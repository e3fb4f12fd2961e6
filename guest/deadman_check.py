"""What ``gagent-guest check`` says about the freeze dead-man's switch (``deadman.py``).

Its deadline (``/etc/gagent/deadman.conf``), whether it is armed right now
(a freeze is on), and every time it fired since boot: when, after how long,
for which freeze (the qemu-ga pid and channel that asked for it) and what it
thawed.  A firing is a warning until qemu-ga gets its thaw (the guest recovered,
but whoever held the freeze died or overran, and qemu-ga keeps saying "frozen"
until the host thaws); afterwards it is information.
"""

from __future__ import annotations

import time

from .deadman import CONFIG, STATE_DIR, armed_record, fired_records, read_config
from .report import INFO, WARNING, Report
from .roots import Roots

__all__ = ["check_deadman"]


def _when(stamp: object) -> str:
    if not isinstance(stamp, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _freeze(record: dict[str, object]) -> str:
    who = f"qemu-ga pid {record.get('qga_pid')}"
    if record.get("channel"):
        who += f" on {record['channel']}"
    armed = _when(record.get("armed_at"))
    return f"freeze {record.get('freeze') or '?'} (asked by {who}, armed {armed})"


def check_deadman(report: Report, roots: Roots) -> None:
    """Add the switch's findings to ``report`` and its state to ``report.facts``."""
    config = read_config(roots.map(CONFIG))
    state_dir = roots.map(STATE_DIR)
    armed = armed_record(state_dir)
    fired = fired_records(state_dir)
    report.facts["deadman"] = {
        "deadline_s": config.deadline,
        "config": config.source,
        "armed": armed,
        "last_thawed": armed_record(state_dir, "last"),
        "fired": fired,
    }
    if config.deadline == 0:
        report.add(
            "deadman-off",
            INFO,
            f"the freeze dead-man's switch is off (GAGENT_FREEZE_DEADLINE=0 in {CONFIG})",
            f"set GAGENT_FREEZE_DEADLINE=60 in {CONFIG} to let the guest thaw itself",
        )
    if armed is not None:
        report.add(
            "deadman-armed",
            INFO,
            f"a freeze is on: the dead-man's switch thaws it {armed.get('deadline_s')} s after "
            f"it was armed ({_freeze(armed)})",
        )
    for record in fired:
        thawed = ", ".join(str(p) for p in record.get("thawed") or []) or "nothing (already thawed)"
        errors = record.get("errors") or []
        held = ""
        if isinstance(record.get("fired_at"), (int, float)) and isinstance(
            record.get("armed_at"), (int, float)
        ):
            held = f" after {float(record['fired_at']) - float(record['armed_at']):.1f} s"
        message = (
            f"the dead-man's switch thawed {thawed} at {_when(record.get('fired_at'))}{held}: "
            f"{_freeze(record)} outlived its {record.get('deadline_s')} s deadline"
            + (f"; it could not thaw {'; '.join(str(e) for e in errors)}" if errors else "")
        )
        longer = f"raise GAGENT_FREEZE_DEADLINE in {CONFIG} if the host needs longer freezes"
        if "qga_thawed_at" in record:  # settled: qemu-ga got its thaw afterwards
            message += f"; qemu-ga was thawed at {_when(record['qga_thawed_at'])}"
            report.add("deadman-fired", INFO, message, longer)
        else:
            report.add(
                "deadman-fired",
                WARNING,
                message,
                "whoever held the freeze died or overran it; qemu-ga still says frozen until "
                f"a thaw: run 'gagent thaw DOMAIN' on the host ({longer})",
            )

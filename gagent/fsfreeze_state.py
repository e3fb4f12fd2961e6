"""``guest-fsfreeze-status``'s reply, on the standard library alone.

A one-shot ``gagent agent --socket S ping`` asks it (is the guest frozen?), and
must not load the decode layer (msgspec and the reply types) for one word;
:mod:`gagent.fs_types` re-exports the enum.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["FsfreezeStatus"]


class FsfreezeStatus(enum.StrEnum):
    THAWED = "thawed"
    FROZEN = "frozen"

    @classmethod
    def from_json(cls, value: Any) -> FsfreezeStatus:
        state = _STATES.get(value) if type(value) is str else None
        if state is not None:
            return state
        from .decoding import convert  # the error's words, as for every reply

        return convert(value, cls, "guest-fsfreeze-status")


_STATES = {s.value: s for s in FsfreezeStatus}

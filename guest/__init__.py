"""Guest side helper (python3 stdlib + pyserial only; no trio, no host code).

``gagent-guest check`` says whether the agent channel works in this guest and
why not; ``gagent-guest probe`` answers the host's ``gagent channel probe``.
Runs on the guest's system python (3.9 or newer): see ``cli.py``.
"""

__version__ = "0.1.0"

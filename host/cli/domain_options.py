"""What ``gagent channel`` (domain.py) and ``gagent channel probe`` (probe.py) share.

Its own module so that both build on it: domain.py adds probe.py's command to
its ``channel`` group, and probe.py needs nothing of domain.py.
"""

from __future__ import annotations

from .options import connect_option as shared_connect_option
from .options import json_option as shared_json_option

__all__ = ["DEFAULT_TIMEOUT", "connect_option", "json_option"]

DEFAULT_TIMEOUT = 30.0

connect_option = shared_connect_option()
json_option = shared_json_option()

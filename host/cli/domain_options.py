"""What ``gagent channel`` (domain.py) and ``gagent channel probe`` (probe.py) share.

Its own module so that both build on it: domain.py adds probe.py's command to
its ``channel`` group, and probe.py needs nothing of domain.py.
"""

from __future__ import annotations

import click

from .options import connect_option as shared_connect_option

__all__ = ["DEFAULT_TIMEOUT", "connect_option", "json_option"]

DEFAULT_TIMEOUT = 30.0

connect_option = shared_connect_option()
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

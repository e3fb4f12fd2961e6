"""Inventory: every guest on every hypervisor (xCAT rscan semantics), with what its agent
reports, kept in a database (SQLite, or PostgreSQL shared by several management nodes).

* :mod:`.targets`  which hypervisors, and their names
* :mod:`.scan`     the concurrent scan (trio), :mod:`.agentdata` what agents are asked
* :mod:`.model`    :class:`Guest` and friends, read from the domain XML
* :mod:`.modes`    the write modes (-w/-u/-n) and their conflicts, as a pure decision
* :mod:`.store`    the versioned store, one transaction per scan; :mod:`.backends` the databases;
  :mod:`.rows`     a guest as a row of the guests table, column by name
* :mod:`.diff`     what changed since the previous scan
* :mod:`.testnode` node XML files for libvirt's test driver (tests, benchmarks, demos)
"""

from .backends import NoInventory, StoreError, default_db_path
from .diff import Diff, Sighting
from .model import AgentData, AgentStatus, Disk, Guest, Nic, parse_domain_xml
from .modes import Conflict, Mode, Plan, plan_writes
from .store import Applied, Store
from .targets import Target, parse_targets

__all__ = [
    "AgentData",
    "AgentStatus",
    "Applied",
    "Conflict",
    "Diff",
    "Disk",
    "Guest",
    "HypervisorReport",
    "Mode",
    "Nic",
    "NoInventory",
    "Plan",
    "ScanProgress",
    "ScanResult",
    "Sighting",
    "Store",
    "StoreError",
    "Target",
    "default_db_path",
    "parse_domain_xml",
    "parse_targets",
    "plan_writes",
    "scan_hypervisors",
]


#: The scan needs libvirt (gagent[host]); the stored inventory does not: loaded on use.
_SCAN_NAMES = ("HypervisorReport", "ScanProgress", "ScanResult", "scan_hypervisors")


def __getattr__(name: str) -> object:
    if name in _SCAN_NAMES:
        from . import scan

        return getattr(scan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Host side: libvirt connection, channel XML, inventory, snapshots, migration checks.

Public API (loaded on first use, so ``import gagent.host`` costs nothing;
``dir(gagent.host)`` lists it; libvirt-python and lxml come with ``gagent[host]``, and
without them a name of it raises ImportError saying so):

* ``open_domain_agent(ref, uri=..., transport=...)``: the typed agent commands of a
  domain (name, UUID or ID), over gagent's channel or libvirt's (``async with``);
* ``open_domain(ref, uri=...)`` -> :class:`DomainSession`: the domain read once
  (state, XML, channels), its routes and advice;
* ``open_hypervisor(uri)`` -> :class:`Hypervisor` (``async with``);
* ``snapshot_session(session, name, ...)``: freeze, external disk-only snapshot,
  thaw; ``snapshot_group(members, name, ...)``: one frozen instant across domains;
* ``emergency_thaw(ref, uri=...)``: thaw through every agent the domain has;
* ``add_to_domain``/``remove_from_domain``: gagent's private channel.

For blocking callers: :func:`gagent.sync.open_domain_agent`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gagent import _lazy_exports

if TYPE_CHECKING:
    from .channel_ops import add_to_domain, remove_from_domain
    from .group_snapshot import snapshot_group
    from .session import DomainSession, open_domain, open_domain_agent
    from .snapshot import snapshot_session
    from .thaw import emergency_thaw
    from .virt import Hypervisor, open_hypervisor

#: Public names -> the module (under gagent.host) that defines them.
_LAZY = {
    "add_to_domain": "channel_ops",
    "remove_from_domain": "channel_ops",
    "snapshot_group": "group_snapshot",
    "DomainSession": "session",
    "open_domain": "session",
    "open_domain_agent": "session",
    "snapshot_session": "snapshot",
    "emergency_thaw": "thaw",
    "Hypervisor": "virt",
    "open_hypervisor": "virt",
}

__all__ = [
    "DomainSession",
    "Hypervisor",
    "add_to_domain",
    "emergency_thaw",
    "open_domain",
    "open_domain_agent",
    "open_hypervisor",
    "remove_from_domain",
    "snapshot_group",
    "snapshot_session",
]


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY, globals(), extra="host")

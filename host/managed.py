"""Domains whose definition a manager owns: oVirt/VDSM, OpenStack nova, KubeVirt.

These managers generate the domain XML themselves and define it again when
they see fit (VDSM on every start, nova on a hard reboot, a resize or a
migration, KubeVirt's virt-launcher from the VirtualMachineInstance): a
channel that ``gagent channel add`` wrote into such a definition is silently
lost at the next redefine, and VDSM wants libvirt to itself.  So gagent refuses
to edit their persistent definition (unless ``--force``) and says what to do
through the manager instead; reading (``channel list``, ``status``, agent
commands) works as everywhere.

How a manager shows: the namespace of its element under ``<metadata>``
(:func:`manager_of`, pure, over :class:`~gagent.host.domxml.DomainFacts`), and
for oVirt also a host running vdsmd (:func:`vdsm_running`).  KubeVirt's domain
names (``NAMESPACE_VMI``) alone prove nothing (any domain may have an
underscore); its metadata element does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from gagent.errors import UsageError

if TYPE_CHECKING:
    from .domxml import DomainFacts
    from .virt import Domain

__all__ = [
    "ManagedDomain",
    "Manager",
    "check_edit_allowed",
    "manager_of",
    "uri_is_local",
    "vdsm_running",
]


@dataclass(frozen=True)
class Manager:
    """Who owns a domain's definition, what showed it, and how to get a channel there."""

    name: str
    evidence: str
    #: how to get an agent channel through the manager (it adds libvirt's own)
    advice: str


_OVIRT_ADVICE = (
    "oVirt adds the guest agent channel (org.qemu.guest_agent.0) to every VM it runs: "
    "reach it with --transport libvirt"
)
_NOVA_ADVICE = (
    "set the image property hw_qemu_guest_agent=yes and hard-reboot the instance (nova adds "
    "org.qemu.guest_agent.0), then reach it with --transport libvirt"
)
_KUBEVIRT_ADVICE = (
    "KubeVirt gives every VMI the guest agent channel (org.qemu.guest_agent.0): "
    "reach it with --transport libvirt"
)

#: metadata namespace prefix -> (manager, advice)
_NAMESPACES = (
    ("http://ovirt.org/vm/", "oVirt/VDSM", _OVIRT_ADVICE),
    ("http://openstack.org/xmlns/libvirt/nova/", "OpenStack nova", _NOVA_ADVICE),
    ("http://kubevirt.io", "KubeVirt", _KUBEVIRT_ADVICE),
)


def manager_of(facts: DomainFacts, *, vdsm_host: bool = False) -> Manager | None:
    """The manager that owns ``facts``' domain, or None; ``vdsm_host``: vdsmd runs on
    the domain's host (VDSM then owns every domain there, whatever its XML says)."""
    for namespace, _ in facts.metadata:
        for prefix, name, advice in _NAMESPACES:
            if namespace.startswith(prefix):
                return Manager(name, f"its XML carries {name}'s metadata ({namespace})", advice)
    if vdsm_host:
        return Manager("oVirt/VDSM", "its host runs vdsmd", _OVIRT_ADVICE)
    return None


def uri_is_local(uri: str) -> bool:
    """True when libvirt runs on this machine (so socket directories can be checked here)."""
    return not urlparse(uri).hostname


def vdsm_running(proc: Path = Path("/proc")) -> bool:
    """Whether a vdsmd process runs on this machine (read from ``proc``)."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return False
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "vdsmd":
                return True
        except OSError:
            continue  # gone, or not ours to read
    return False


class ManagedDomain(UsageError):
    """A persistent edit refused: a manager owns the domain's definition."""

    def __init__(self, domain: str, manager: Manager, doing: str, forced: str):
        self.manager = manager
        super().__init__(
            f"domain {domain} is managed by {manager.name} ({manager.evidence}), which "
            f"defines it again and would drop {doing}: {manager.advice}; or, knowing the "
            f"edit may be lost, run: {forced}"
        )


async def check_edit_allowed(
    domain: Domain, command: str, *, doing: str, force: bool, local: bool, dry_run: bool = False
) -> str | None:
    """Refuse (:class:`ManagedDomain`) a persistent edit of a managed ``domain``.

    ``command`` is the gagent command making the edit (named with ``--force``
    in the refusal); ``local``: the domain's host is this machine (vdsmd is
    looked for only there).  With ``force`` it returns a warning line instead;
    None when no manager owns it.  A dry run (which changes nothing) is not
    refused either: it exits 0 like any preview, and its warning line says that
    the real run would be refused, with the refusal's own text.
    """
    from .domxml import parse_domain

    if not await domain.is_persistent():
        return None  # nothing persistent to lose: a live change only
    facts = parse_domain(await domain.xml(inactive=True))
    manager = manager_of(facts, vdsm_host=local and vdsm_running())
    if manager is None:
        return None
    if not force:
        refusal = ManagedDomain(domain.name, manager, doing, f"{command} --force")
        if not dry_run:
            raise refusal
        return f"warning: the real run is refused without --force: {refusal}"
    return (
        f"warning: {manager.name} manages {domain.name} ({manager.evidence}) and may drop "
        "this change when it defines the domain again"
    )

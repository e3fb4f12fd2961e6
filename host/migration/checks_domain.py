"""Built-in checks about the domain itself: storage, networks, identity, devices, guest."""

from __future__ import annotations

from ..managed import manager_of
from ..virt import DomainNotFound, Unsupported
from .context import MigrationContext
from .framework import CheckResult, Severity, check

__all__ = ["fsfreeze", "guest_agent", "hostdevs", "name_uuid", "networks", "snapshots", "storage"]


@check("storage", "every disk is reachable on the destination, or copied (block migration)")
async def storage(ctx: MigrationContext) -> CheckResult:
    disks = [d for d in ctx.facts.disks if d.has_source]
    local = [d for d in disks if d.kind != "network"]
    if not disks:
        return CheckResult.success("the domain has no disk with a source")
    if ctx.options.copy_storage:
        return CheckResult.success(
            f"{len(local)} local disk(s) will be copied (block migration)",
            copied=[d.describe() for d in local],
        )
    missing = []
    for disk in local:
        if disk.kind == "volume":
            found = await ctx.destination.pool_volume_exists(disk.pool or "", disk.volume or "")
        else:
            found = await ctx.destination.volume_path_exists(disk.path or "")
        if not found:
            missing.append(disk.describe())
    networked = [d.describe() for d in disks if d.kind == "network"]
    if missing:
        return CheckResult.fail(
            f"not found in any storage pool of the destination: {', '.join(missing)}; "
            "share the storage (and define its pool there) or request a block migration "
            "(--copy-storage)",
            missing=missing,
        )
    return CheckResult.success(
        f"{len(disks)} disk(s) reachable on the destination"
        + (f" ({len(networked)} on network storage)" if networked else ""),
        disks=[d.describe() for d in disks],
    )


async def _bridges(ctx: MigrationContext) -> tuple[set[str], bool]:
    """Bridge/device names the destination has, and whether its interface list was readable."""
    names = {net.bridge for net in await ctx.destination.networks() if net.bridge}
    try:
        names.update(await ctx.destination.interface_names())
    except Unsupported:
        return names, False
    return names, True


@check("networks", "the networks and bridges the domain uses exist on the destination")
async def networks(ctx: MigrationContext) -> CheckResult:
    wanted = [i for i in ctx.facts.interfaces if i.kind in ("network", "bridge", "direct")]
    if not wanted:
        return CheckResult.success("the domain uses no libvirt network, bridge or macvtap device")
    nets = {net.name: net for net in await ctx.destination.networks()}
    problems, unverified = [], []
    host_names: tuple[set[str], bool] | None = None
    for iface in wanted:
        if iface.kind == "network":
            net = nets.get(iface.source or "")
            if net is None:
                problems.append(f"network {iface.source} is not defined")
            elif not net.active:
                problems.append(f"network {iface.source} is not active (virsh net-start)")
            continue
        if host_names is None:
            host_names = await _bridges(ctx)
        names, complete = host_names
        if iface.source in names:
            continue
        what = "bridge" if iface.kind == "bridge" else "host device"
        if complete:
            problems.append(f"{what} {iface.source} does not exist")
        else:
            unverified.append(f"{what} {iface.source}")
    used = [f"{i.kind} {i.source}" for i in wanted]
    if problems:
        return CheckResult.fail(
            "on the destination: " + "; ".join(problems), problems=problems, used=used
        )
    if unverified:
        return CheckResult.warning(
            f"cannot verify {', '.join(unverified)}: the destination's driver cannot list "
            "its host interfaces, and no libvirt network there uses that name",
            unverified=unverified,
            used=used,
        )
    return CheckResult.success(f"all present on the destination: {', '.join(used)}", used=used)


@check("name-uuid", "no domain with the same name or UUID is defined on the destination")
async def name_uuid(ctx: MigrationContext) -> CheckResult:
    name, uuid = ctx.facts.name, ctx.facts.uuid
    clashes = []
    for ref, what in ((name, "name"), (uuid, "UUID")):
        try:
            found = await ctx.destination.lookup(ref)
        except DomainNotFound:
            continue
        if ref not in (found.name, found.uuid):
            continue  # a numeric name found another domain by its ID
        clashes.append(f"{what} {ref} (domain {found.name}, UUID {found.uuid})")
    if clashes:
        return CheckResult.fail(
            "the destination already has a domain with the same " + " and ".join(clashes),
            clashes=clashes,
        )
    return CheckResult.success(f"neither {name} nor {uuid} is defined on the destination")


@check("hostdev", "no host device is passed through to the guest")
async def hostdevs(ctx: MigrationContext) -> CheckResult:
    found = [d.describe() for d in ctx.facts.hostdevs]
    if found:
        return CheckResult.fail(
            f"host devices passed through cannot migrate: {', '.join(found)}; detach them first "
            "(virsh detach-device)",
            hostdevs=found,
        )
    return CheckResult.success("no host device passed through")


@check(
    "snapshots",
    "no snapshot metadata that blocks or does not follow the migration",
    severity=Severity.ADVISORY,
)
async def snapshots(ctx: MigrationContext) -> CheckResult:
    try:
        names = await ctx.domain.snapshot_names()
    except Unsupported:
        return CheckResult.warning("cannot list snapshots: not supported by the source's driver")
    if names:
        return CheckResult.warning(
            f"{len(names)} snapshot(s) with libvirt metadata ({', '.join(names)}): the metadata "
            "stays on the source and internal snapshots can make the hypervisor refuse; "
            "delete them or redefine them on the destination (virsh snapshot-create --redefine)",
            snapshots=names,
        )
    return CheckResult.success("no snapshot metadata")


@check(
    "guest-agent",
    "the domain has an agent channel and its agent answers (else the guest is blind afterwards)",
    severity=Severity.ADVISORY,
)
async def guest_agent(ctx: MigrationContext) -> CheckResult:
    probe = await ctx.agent_probe()
    name = ctx.facts.name
    if not probe.channels:
        manager = manager_of(ctx.facts)
        fix = (
            f"add one: gagent channel add -c {ctx.source.uri} {name}"
            if manager is None
            else f"{manager.name} manages the domain: {manager.advice}"
        )
        return CheckResult.warning(
            "no agent channel: nothing will be able to reach the guest's agent after the "
            f"migration ({fix})"
        )
    if not probe.running:
        return CheckResult.success(
            f"agent channel {', '.join(probe.channels)} present (the domain is not running: "
            "agent not asked)",
            channels=probe.channels,
        )
    if not probe.answered:
        return CheckResult.warning(
            f"agent channel {', '.join(probe.channels)} present but the agent did not answer: "
            f"{probe.reason}",
            channels=probe.channels,
            reason=probe.reason,
        )
    return CheckResult.success(f"the agent answers ({probe.route})", channels=probe.channels)


@check("fsfreeze", "the guest's filesystems are not frozen")
async def fsfreeze(ctx: MigrationContext) -> CheckResult:
    probe = await ctx.agent_probe()
    name = ctx.facts.name
    if not probe.running:
        return CheckResult.success("the domain is not running: nothing is frozen")
    if not probe.channels:
        return CheckResult.success("no agent channel: nothing can have frozen the filesystems")
    if not probe.answered:
        return CheckResult.warning(
            f"cannot tell whether the guest's filesystems are frozen: {probe.reason}",
            reason=probe.reason,
        )
    if probe.freeze == "frozen":
        return CheckResult.fail(
            f"the guest's filesystems are frozen: thaw them first "
            f"(gagent agent -c {ctx.source.uri} {name} fsfreeze thaw)",
            freeze=probe.freeze,
        )
    if probe.freeze is None:
        return CheckResult.warning(
            f"cannot tell whether the guest's filesystems are frozen: {probe.freeze_error}",
            reason=probe.freeze_error,
        )
    return CheckResult.success(f"filesystems {probe.freeze}", freeze=probe.freeze)

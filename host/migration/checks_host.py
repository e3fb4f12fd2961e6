"""Built-in checks comparing the two hosts: libvirt, hypervisor, CPU, memory."""

from __future__ import annotations

from ..domxml import parse_xml
from ..virt import CpuCompatibility, Unsupported
from .context import MigrationContext
from .framework import CheckResult, Severity, check

__all__ = ["cpu", "free_memory", "hypervisor_type", "hypervisor_version", "libvirt_version"]


def version_text(encoded: int) -> str:
    """libvirt's encoded version (major*1e6 + minor*1e3 + micro) as 'major.minor.micro'."""
    return f"{encoded // 1_000_000}.{encoded // 1000 % 1000}.{encoded % 1000}"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@check("libvirt-version", "libvirt is the same version on both hosts", severity=Severity.ADVISORY)
async def libvirt_version(ctx: MigrationContext) -> CheckResult:
    src, dst = await ctx.source.libvirt_version(), await ctx.destination.libvirt_version()
    details = {"source": version_text(src), "destination": version_text(dst)}
    if src == dst:
        return CheckResult.success(f"libvirt {version_text(src)} on both hosts", **details)
    older = "older" if dst < src else "newer"
    return CheckResult.warning(
        f"libvirt differs: {version_text(src)} on the source, {version_text(dst)} "
        f"({older}) on the destination",
        **details,
    )


@check("hypervisor-type", "both hosts run the same hypervisor driver")
async def hypervisor_type(ctx: MigrationContext) -> CheckResult:
    src, dst = await ctx.source.hypervisor_type(), await ctx.destination.hypervisor_type()
    if src == dst:
        return CheckResult.success(f"{src} on both hosts", source=src, destination=dst)
    return CheckResult.fail(
        f"different hypervisors: {src} on the source, {dst} on the destination: "
        "a domain cannot migrate between them",
        source=src,
        destination=dst,
    )


@check(
    "hypervisor-version",
    "the destination's hypervisor is not older than the source's",
    severity=Severity.ADVISORY,
)
async def hypervisor_version(ctx: MigrationContext) -> CheckResult:
    src_type, dst_type = await ctx.source.hypervisor_type(), await ctx.destination.hypervisor_type()
    src, dst = await ctx.source.hypervisor_version(), await ctx.destination.hypervisor_version()
    details = {
        "source": f"{src_type} {version_text(src)}",
        "destination": f"{dst_type} {version_text(dst)}",
    }
    if src_type != dst_type:
        return CheckResult.warning(
            f"cannot compare versions of different hypervisors ({details['source']} on the "
            f"source, {details['destination']} on the destination)",
            **details,
        )
    if dst < src:
        return CheckResult.warning(
            f"the destination's {dst_type} {version_text(dst)} is older than the source's "
            f"{version_text(src)}: machine types or devices the guest uses may be missing",
            **details,
        )
    return CheckResult.success(
        f"{dst_type} {version_text(dst)} on the destination, {version_text(src)} on the source",
        **details,
    )


def _guest_support(capabilities: str) -> set[tuple[str, str]]:
    """(arch, domain type) pairs a host's capabilities offer guests."""
    root = parse_xml(capabilities, root_tag="capabilities")  # the one hardened parser
    pairs = set()
    for guest in root.iterfind("guest"):
        arch = guest.find("arch")
        if arch is None:
            continue
        for domain in arch.iterfind("domain"):
            pairs.add((arch.get("name", ""), domain.get("type", "")))
    return pairs


@check("cpu", "the destination can run the domain's architecture and CPU model")
async def cpu(ctx: MigrationContext) -> CheckResult:
    facts = ctx.facts
    arch = facts.arch or "?"
    offered = _guest_support(await ctx.destination.capabilities())
    if facts.arch and (facts.arch, facts.virt_type) not in offered:
        kinds = ", ".join(f"{t}/{a}" for a, t in sorted(offered)) or "none"
        return CheckResult.fail(
            f"the destination cannot run {facts.virt_type}/{arch} guests (it offers: {kinds})",
            arch=arch,
            virt_type=facts.virt_type,
        )
    details = {"arch": arch, "mode": facts.cpu_mode, "model": facts.cpu_model}
    if facts.cpu_mode is None or (facts.cpu_mode == "custom" and not facts.cpu_model):
        return CheckResult.success(
            f"{arch} guest with the hypervisor's default CPU model", **details
        )
    if facts.cpu_mode == "host-model":
        return CheckResult.success(
            f"{arch} guest with host-model CPU: the destination picks its own model when the "
            "domain starts there",
            **details,
        )
    if facts.cpu_mode in ("host-passthrough", "maximum"):
        return CheckResult.warning(
            f"the guest sees the source host's own CPU ({facts.cpu_mode}): the destination "
            "needs the same CPU model and microcode, which libvirt cannot compare",
            **details,
        )
    try:
        answer = await ctx.destination.compare_cpu(
            facts.cpu_xml or "",
            arch=facts.arch,
            machine=facts.machine,
            virttype=facts.virt_type,
            emulator=facts.emulator,
        )
    except Unsupported:
        driver = await ctx.destination.hypervisor_type()
        return CheckResult.warning(
            f"cannot compare CPUs: not supported by the destination's {driver} driver "
            f"(the guest's CPU: {facts.cpu_model or facts.cpu_mode})",
            **details,
        )
    details["comparison"] = answer.value
    if answer is CpuCompatibility.INCOMPATIBLE:
        return CheckResult.fail(
            f"the destination's CPU cannot provide the guest's CPU "
            f"({facts.cpu_model or facts.cpu_mode})",
            **details,
        )
    return CheckResult.success(
        f"the destination provides the guest's CPU ({facts.cpu_model or facts.cpu_mode}): "
        f"{answer.value}",
        **details,
    )


@check("free-memory", "the destination has enough free memory for the domain")
async def free_memory(ctx: MigrationContext) -> CheckResult:
    needed = ctx.facts.current_memory_kib * 1024
    maximum = ctx.facts.memory_kib * 1024
    try:
        free = await ctx.destination.free_memory()
    except Unsupported:
        return CheckResult.warning(
            "cannot tell: the destination's driver does not report its free memory",
            needed=needed,
        )
    details = {"free": free, "needed": needed, "maximum": maximum}
    if free < needed:
        return CheckResult.fail(
            f"the destination has {_bytes(free)} free, the domain uses {_bytes(needed)}",
            **details,
        )
    if free < maximum:
        return CheckResult.warning(
            f"the destination has {_bytes(free)} free: enough for the {_bytes(needed)} the "
            f"domain uses now, not for its maximum of {_bytes(maximum)}",
            **details,
        )
    return CheckResult.success(
        f"the destination has {_bytes(free)} free, the domain needs up to {_bytes(maximum)}",
        **details,
    )

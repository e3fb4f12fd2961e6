"""Running the migration itself: libvirt's migrate3, with progress from the job info."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import trio

from gagent.errors import HostError

from ..virt import Domain, JobProgress, Unsupported, migration_flags
from .context import MigrationContext, MigrationOptions

__all__ = ["MigrationResult", "flags_for", "run_migration"]


@dataclass(frozen=True)
class MigrationResult:
    domain: str
    destination: str
    seconds: float
    flags: int


def flags_for(options: MigrationOptions) -> int:
    """The VIR_MIGRATE_* flags for ``options``."""
    return migration_flags(
        live=options.live,
        persist_dest=options.persistent,
        undefine_source=options.undefine_source,
        copy_storage=options.copy_storage,
    )


async def _poll(
    domain: Domain, on_progress: Callable[[JobProgress], None], interval: float
) -> None:
    while True:
        await trio.sleep(interval)
        try:
            progress = await domain.job_progress()
        except Unsupported:
            return
        except HostError:
            continue  # the job is starting or ending: ask again
        on_progress(progress)


async def run_migration(
    ctx: MigrationContext,
    *,
    uri: str | None = None,
    on_progress: Callable[[JobProgress], None] | None = None,
    poll_interval: float = 0.5,
) -> MigrationResult:
    """Migrate ``ctx.domain`` to ``ctx.destination`` (checks are the caller's business).

    Raises HostError when libvirt refuses or the migration fails.  Cancelled
    (or interrupted by Ctrl-C) while libvirt migrates, it aborts the job.
    """
    flags = flags_for(ctx.options)
    start = trio.current_time()
    failure: HostError | None = None
    async with trio.open_nursery() as nursery:
        if on_progress is not None:
            nursery.start_soon(_poll, ctx.domain, on_progress, poll_interval)
        try:
            await ctx.domain.migrate(ctx.destination, flags=flags, uri=uri)
        except HostError as exc:
            failure = exc  # raised below, not wrapped in the nursery's exception group
        except BaseException:  # cancelled or interrupted (Ctrl-C): stop libvirt's job too
            with trio.CancelScope(shield=True), contextlib.suppress(HostError):
                await ctx.domain.abort_job()
            raise
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return MigrationResult(ctx.facts.name, ctx.destination.uri, trio.current_time() - start, flags)

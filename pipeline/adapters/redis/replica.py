"""The cell index a worker matches against: an in-process replica of the Redis index.

The GlobalKTable pattern. The active alerts are few (dozens nationwide; every state's
cover together is about 1 M compact cells), so each worker holds all their covers in a
:class:`~pipeline.adapters.memory.index.MemoryCellIndex` and answers ``alerts_at`` from it,
about a microsecond per cell, instead of sending one SMEMBERS per resolution level of
every cell and reading the alert records again for each batch. Redis stays the source the
replica is loaded from (itself a view rebuilt from the alerts topic, the source of truth).

Writes and point reads (``put_alert``, ``remove_alert``, ``get_alert``, ``owed``, ...) go to
the :class:`~pipeline.adapters.redis.index.RedisCellIndex` it wraps. Each ``alerts_at``
first reads the rebuild token and the change counter
(:meth:`~pipeline.adapters.redis.index.RedisCellIndex.index_version`, one round trip);
when either moved, it loads what changed (the registry, the records, the covers of the
alerts whose version changed) before it answers.

Staleness, bounded:

* a ``put_alert`` or ``remove_alert`` (an Update, a Cancel, an expiry) that returned before
  an ``alerts_at`` began, on any worker, is seen by that call: the counter is bumped once
  the change is visible and read at the start of every call;
* a replica started fresh loads the whole index in its first call, and no call answers
  while the store has no rebuild marker (IndexNotBuilt, as the Redis index raises); a
  rebuild writes a new token, so a replica reloads after it even if the count is the same;
* a change whose writer failed between the change and its bump (Redis unreachable just
  then), and a record that Redis expired on its own, are seen at most ``recheck_s`` later:
  the replica compares itself with Redis that often even when the counter did not move.

An alert's cover in the replica is one version's, whole: readers see the old cover or the
new one, never a mixture (the covers are loaded first, then installed in one synchronous
step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.adapters.redis.index import IndexVersion, RedisCellIndex
from pipeline.domain.targeting.cards import ActiveAlert

# Reads of the changes per load when an alert moved on while it was read (its cover gone
# or not yet written): the next call tries again after these.
_LOAD_ATTEMPTS = 3


class ReplicatedCellIndex:
    """:class:`pipeline.domain.ports.CellIndex`: writes and point reads on ``source``,
    ``alerts_at`` on an in-process replica of it, brought up to date at the start of each
    call (one round trip when nothing changed). ``recheck_s`` bounds how long a change
    that was never counted (see the module docstring) can go unseen."""

    def __init__(self, source: RedisCellIndex, *, recheck_s: float = 5.0) -> None:
        self._source = source
        self._replica = MemoryCellIndex(resolution=source.resolution)
        self._recheck_s = recheck_s
        self._seen: IndexVersion | None = None  # the version the replica was loaded at
        self._checked_at = -float("inf")  # time.monotonic() of the last load
        self._loading = asyncio.Lock()

    # -- the replica -----------------------------------------------------------------------
    async def alerts_at(self, cells: Sequence[int]) -> list[Sequence[ActiveAlert]]:
        observed = await self._source.index_version()
        if self._stale(observed):
            await self._load(observed)
        return await self._replica.alerts_at(cells)

    async def installed(self) -> list[tuple[ActiveAlert, frozenset[int]]]:
        observed = await self._source.index_version()
        if self._stale(observed):
            await self._load(observed)
        return await self._replica.installed()

    def _stale(self, observed: IndexVersion) -> bool:
        return observed != self._seen or time.monotonic() - self._checked_at >= self._recheck_s

    async def _load(self, observed: IndexVersion) -> None:
        """Bring the replica to at least the state ``observed`` counts."""
        async with self._loading:
            if not self._stale(observed):
                return  # loaded meanwhile, by a call that read this same version first
            started = time.monotonic()
            complete = False
            for _ in range(_LOAD_ATTEMPTS):
                changes = await self._source.changes_since(self._replica.versions())
                self._replica.apply(changes.installed, changes.removed)
                complete = changes.complete
                if complete:
                    break
            # Incomplete: some alert keeps its previous cover, and the next call reads again.
            self._seen = observed if complete else None
            self._checked_at = started

    # -- everything else goes to Redis -----------------------------------------------------
    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        await self._source.put_alert(alert, cells)

    async def remove_alert(self, key: str) -> bool:
        return await self._source.remove_alert(key)

    async def tombstone(self, key: str, version: int, keep_until_ms: int) -> None:
        await self._source.tombstone(key, version, keep_until_ms)

    async def cancelled_version(self, key: str) -> int | None:
        return await self._source.cancelled_version(key)

    async def owe(self, key: str, version: int, event: bytes, keep_until_ms: int) -> None:
        await self._source.owe(key, version, event, keep_until_ms)

    async def owed(self, key: str) -> tuple[int, bytes] | None:
        return await self._source.owed(key)

    async def paid(self, key: str, version: int) -> None:
        await self._source.paid(key, version)

    async def mark_built(self) -> None:
        await self._source.mark_built()

    async def is_built(self) -> bool:
        return await self._source.is_built()

    async def get_alert(self, key: str) -> ActiveAlert | None:
        return await self._source.get_alert(key)

    async def active_alerts(self) -> list[ActiveAlert]:
        return await self._source.active_alerts()

    async def cover_of(self, key: str) -> frozenset[int] | None:
        """The installed compact cover of ``key``, as Redis holds it (for tools and checks)."""
        return await self._source.cover_of(key)

"""In-process twins of the Redis index and dedup store.

Same contracts as :mod:`pipeline.adapters.redis_index` (tests/contract/ runs one suite
against both), for the offline replay and for pure unit tests. Single-process only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import h3.api.basic_int as h3i

from pipeline.domain.cards import ActiveAlert
from pipeline.domain.models import Sighting
from pipeline.domain.presence import latest_per_user, plan_buckets, within
from pipeline.errors import IndexNotBuilt


class MemoryCellIndex:
    def __init__(self, *, resolution: int, built: bool = True) -> None:
        self._resolution = resolution
        self._alerts: dict[str, ActiveAlert] = {}
        self._covers: dict[str, frozenset[int]] = {}
        self._cells: dict[int, set[str]] = {}
        # How many indexed cells each resolution has: alerts_at looks only at those levels.
        self._levels: dict[int, int] = {}
        self._tombs: dict[str, int] = {}
        self._built = built

    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        if any(h3i.get_resolution(c) > self._resolution for c in cells):
            raise ValueError(f"cover has cells finer than the index resolution {self._resolution}")
        self._drop(alert.key)
        self._alerts[alert.key] = alert
        self._covers[alert.key] = cells
        for cell in cells:
            keys = self._cells.get(cell)
            if keys is None:
                keys = self._cells[cell] = set()
                level = h3i.get_resolution(cell)
                self._levels[level] = self._levels.get(level, 0) + 1
            keys.add(alert.key)

    async def remove_alert(self, key: str) -> bool:
        return self._drop(key)

    def _drop(self, key: str) -> bool:
        existed = self._alerts.pop(key, None) is not None
        for cell in self._covers.pop(key, frozenset()):
            keys = self._cells.get(cell)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._cells[cell]
                    self._levels[h3i.get_resolution(cell)] -= 1
        return existed

    async def tombstone(self, key: str, version: int, keep_until_ms: int) -> None:
        self._tombs[key] = max(version, self._tombs.get(key, version))

    async def cancelled_version(self, key: str) -> int | None:
        return self._tombs.get(key)

    async def mark_built(self) -> None:
        self._built = True

    async def is_built(self) -> bool:
        return self._built

    async def get_alert(self, key: str) -> ActiveAlert | None:
        return self._alerts.get(key)

    async def active_alerts(self) -> list[ActiveAlert]:
        return [self._alerts[k] for k in sorted(self._alerts)]

    async def cover_of(self, key: str) -> frozenset[int] | None:
        return self._covers.get(key)

    async def alerts_at(self, cells: Sequence[int]) -> list[list[ActiveAlert]]:
        if not self._built:
            raise IndexNotBuilt("the in-process index was flushed")
        res = self._resolution
        index = self._cells
        levels = sorted(r for r, n in self._levels.items() if n)
        out: list[list[ActiveAlert]] = []
        for cell in cells:
            keys: set[str] | None = None
            for r in levels:
                hit = index.get(cell if r == res else _parent(cell, r))
                if hit:
                    keys = set(hit) if keys is None else keys | hit
            out.append([self._alerts[k] for k in sorted(keys)] if keys else [])
        return out


def _parent(cell: int, resolution: int) -> int:
    """``h3.cell_to_parent`` for a valid cell at least as fine as ``resolution``, by the bit
    layout of H3 indexes (resolution in bits 52-55, then 3 bits per digit, unused digits
    all ones): about five times faster than the checked library call on this hot path."""
    unused = (1 << (3 * (15 - resolution))) - 1
    return (cell & ~(0xF << 52)) | (resolution << 52) | unused


class MemoryDedupStore:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    async def unseen(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        return [pair not in self._seen for pair in pairs]

    async def mark_seen(
        self, pairs: Sequence[tuple[str, str]], expires_at_ms: Sequence[int]
    ) -> None:
        for pair, until in zip(pairs, expires_at_ms, strict=True):
            self._seen[pair] = until

    def forget_before(self, now_ms: int) -> int:
        """Drop records that expired before ``now_ms``; returns how many (bounded memory)."""
        stale = [pair for pair, until in self._seen.items() if until < now_ms]
        for pair in stale:
            del self._seen[pair]
        return len(stale)


class MemoryPresenceStore:
    """In-process twin of the Redis presence store."""

    def __init__(self, *, window_ms: int) -> None:
        self._window_ms = window_ms
        self._latest: dict[str, Sighting] = {}

    async def record(self, sightings: Sequence[Sighting]) -> None:
        for s in latest_per_user(sightings):
            self._latest[s.user_id] = s

    async def present_in(
        self, cover: frozenset[int], since_ms: int, chunk: int = 10_000
    ) -> AsyncIterator[list[Sighting]]:
        plan = plan_buckets(cover)
        found = [
            s for _, s in sorted(self._latest.items()) if s.ts >= since_ms and within(plan, s.cell)
        ]
        for start in range(0, len(found), chunk):
            yield found[start : start + chunk]

    def forget_before(self, now_ms: int) -> int:
        """Drop users not sighted within the window before ``now_ms`` (bounded memory)."""
        stale = [u for u, s in self._latest.items() if s.ts + self._window_ms <= now_ms]
        for user in stale:
            del self._latest[user]
        return len(stale)

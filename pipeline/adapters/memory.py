"""In-process twins of the Redis index and dedup store.

Same contracts as :mod:`pipeline.adapters.redis_index` (tests/contract/ runs one suite
against both), for the offline replay and for pure unit tests. Single-process only.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        self._tombs: dict[str, int] = {}
        self._built = built

    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        if any(h3i.get_resolution(c) > self._resolution for c in cells):
            raise ValueError(f"cover has cells finer than the index resolution {self._resolution}")
        self._drop(alert.key)
        self._alerts[alert.key] = alert
        self._covers[alert.key] = cells
        for cell in cells:
            self._cells.setdefault(cell, set()).add(alert.key)

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
        out: list[list[ActiveAlert]] = []
        for cell in cells:
            keys: set[str] = set()
            for r in range(res + 1):
                hit = self._cells.get(cell if r == res else h3i.cell_to_parent(cell, r))
                if hit:
                    keys |= hit
            out.append([self._alerts[k] for k in sorted(keys)])
        return out


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

    async def present_in(self, cover: frozenset[int], since_ms: int) -> list[Sighting]:
        plan = plan_buckets(cover)
        return [
            s
            for user, s in sorted(self._latest.items())
            if s.ts >= since_ms and s.ts + self._window_ms > since_ms and within(plan, s.cell)
        ]

    def forget_before(self, now_ms: int) -> int:
        """Drop users not sighted within the window before ``now_ms`` (bounded memory)."""
        stale = [u for u, s in self._latest.items() if s.ts + self._window_ms <= now_ms]
        for user in stale:
            del self._latest[user]
        return len(stale)

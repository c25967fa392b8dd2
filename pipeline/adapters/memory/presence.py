"""In-process twin of the Redis presence store (:mod:`pipeline.adapters.redis.presence`).

Same contract (tests/contract/test_presence_contract.py runs one suite against both), for
the offline replay and for pure unit tests. Single process only.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import compress, islice, repeat

from pipeline.domain.geo.cells import parent_mask, parents_of
from pipeline.domain.models import Sighting
from pipeline.domain.targeting.presence import (
    BUCKET_RESOLUTION,
    BucketPlan,
    latest_per_user,
    plan_buckets,
    within,
)


class MemoryPresenceStore:
    """:class:`pipeline.domain.ports.PresenceStore` in process memory."""

    def __init__(self, *, window_ms: int) -> None:
        self._window_ms = window_ms
        self._latest: dict[str, Sighting] = {}

    async def record(self, sightings: Sequence[Sighting]) -> None:
        times = list(map(_ts, sightings))
        if not any(map(operator.gt, times, islice(times, 1, None))):
            # Times never go back within the batch (the usual case), so each user's last
            # sighting is its newest: latest_per_user's answer, found in C.
            self._latest.update(zip(map(_user_id, sightings), sightings, strict=True))
            return
        newest = latest_per_user(sightings)
        self._latest.update(zip(map(_user_id, newest), newest, strict=True))

    async def present_in(
        self,
        cover: frozenset[int],
        since_ms: int,
        partitions: frozenset[int] | None,
        chunk: int = 10_000,
    ) -> AsyncIterator[list[str]]:
        plan = plan_buckets(cover)
        found = sorted(
            user
            for user, s in self._present(plan, since_ms)
            if partitions is None or s.partition in partitions
        )
        for start in range(0, len(found), chunk):
            yield found[start : start + chunk]

    def _present(self, plan: BucketPlan, since_ms: int) -> Iterator[tuple[str, Sighting]]:
        """The users fresh since ``since_ms`` and :func:`within` the plan, in any order."""
        sightings = list(self._latest.values())
        cells = list(map(_cell, sightings))
        fresh = map(operator.le, repeat(since_ms), map(_ts, sightings))
        # Most users are far from the cover: their bucket, found in bits (C loops), is not
        # one of the plan's. Only cells coarser than a bucket need within() to tell.
        buckets = plan.whole | plan.partial.keys()
        near = map(buckets.__contains__, parents_of(cells, parent_mask(BUCKET_RESOLUTION)))
        levels = map(operator.and_, map(operator.rshift, cells, repeat(52)), repeat(0xF))
        coarse = map(operator.lt, levels, repeat(BUCKET_RESOLUTION))
        maybe = map(operator.and_, fresh, map(operator.or_, near, coarse))
        for user, s in compress(self._latest.items(), maybe):
            if within(plan, s.cell):
                yield user, s

    def forget_before(self, now_ms: int) -> int:
        """Drop users not sighted within the window before ``now_ms`` (bounded memory)."""
        # A scan of every user, in C: ts <= now_ms - window.
        sighted = map(_ts, self._latest.values())
        stale = list(
            compress(self._latest, map(operator.ge, repeat(now_ms - self._window_ms), sighted))
        )
        for user in stale:
            del self._latest[user]
        return len(stale)


_user_id = operator.attrgetter("user_id")
_ts = operator.attrgetter("ts")
_cell = operator.attrgetter("cell")

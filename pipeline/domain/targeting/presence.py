"""Presence decisions shared by the store adapters: buckets, freshness, cover membership.

Users are grouped into resolution-5 buckets (about 250 km² each). A compact cover cell at
resolution 5 or coarser contains whole buckets; a finer one lies inside a single bucket and
needs a per-user check of the user's cell against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import h3.api.basic_int as h3i

from pipeline.domain.models import Sighting

BUCKET_RESOLUTION = 5


@dataclass(slots=True)
class BucketPlan:
    """Which buckets a cover touches: wholly covered ones, and partly covered ones with the
    finer cover cells inside them."""

    whole: set[int] = field(default_factory=set)
    partial: dict[int, set[int]] = field(default_factory=dict)
    partial_resolutions: dict[int, set[int]] = field(default_factory=dict)

    def buckets(self) -> set[int]:
        return self.whole | set(self.partial)


def plan_buckets(cover: Iterable[int]) -> BucketPlan:
    plan = BucketPlan()
    for cell in cover:
        res = h3i.get_resolution(cell)
        if res <= BUCKET_RESOLUTION:
            plan.whole.update(h3i.cell_to_children(cell, BUCKET_RESOLUTION))
        else:
            bucket = h3i.cell_to_parent(cell, BUCKET_RESOLUTION)
            plan.partial.setdefault(bucket, set()).add(cell)
            plan.partial_resolutions.setdefault(bucket, set()).add(res)
    return plan


def within(plan: BucketPlan, cell: int) -> bool:
    """Whether ``cell`` (finer than the buckets) lies in the cover ``plan`` was made from."""
    bucket = h3i.cell_to_parent(cell, BUCKET_RESOLUTION)
    if bucket in plan.whole:
        return True
    finer = plan.partial.get(bucket)
    if not finer:
        return False
    cell_res = h3i.get_resolution(cell)
    return any(
        (cell if r == cell_res else h3i.cell_to_parent(cell, r)) in finer
        for r in plan.partial_resolutions[bucket]
        if r <= cell_res
    )


def latest_per_user(sightings: Sequence[Sighting]) -> list[Sighting]:
    """The newest sighting of each user, in first-seen order."""
    latest: dict[str, Sighting] = {}
    for s in sightings:
        kept = latest.get(s.user_id)
        if kept is None or s.ts >= kept.ts:
            latest[s.user_id] = s
    return list(latest.values())

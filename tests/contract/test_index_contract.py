"""One contract, two implementations: the Redis index and its in-process twin. Every test
runs against the twin, the real server and a real Redis Cluster (where every key must
work unchanged)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import h3.api.basic_int as h3i
import pytest

from pipeline.adapters.memory.stores import MemoryCellIndex, MemoryDedupStore
from pipeline.adapters.redis.index import RedisCellIndex, RedisDedupStore
from pipeline.errors import IndexNotBuilt
from tests.support.factories import make_active_alert

RES = 9
AUSTIN = (30.2672, -97.7431)
HOUSTON = (29.7604, -95.3698)

Body = Callable[[Any, Any], Awaitable[None]]
Runner = Callable[..., None]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def run(request: pytest.FixtureRequest, connect: Callable[[str], Any]) -> Runner:
    """Runs ``body(index, dedup)`` on a fresh event loop against one implementation."""

    def runner(body: Body, built: bool = True) -> None:
        async def main() -> None:
            if request.param == "memory":
                index: Any = MemoryCellIndex(resolution=RES, built=False)
                if built:
                    await index.mark_built()
                await body(index, MemoryDedupStore())
                return
            client = connect(request.param)
            prefix = f"ct{uuid.uuid4().hex[:8]}"
            try:
                index = RedisCellIndex(client, prefix=prefix, resolution=RES)
                if built:
                    await index.mark_built()
                await body(index, RedisDedupStore(client, prefix=prefix))
            finally:
                await client.aclose()

        asyncio.run(main())

    return runner


def cell(latlon: tuple[float, float], res: int = RES) -> int:
    return int(h3i.latlng_to_cell(latlon[0], latlon[1], res))


def test_alert_is_found_through_a_coarse_compact_cell(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        coarse = h3i.cell_to_parent(cell(AUSTIN), 5)
        await index.put_alert(make_active_alert(), frozenset({coarse}))
        hits = await index.alerts_at([cell(AUSTIN), cell(HOUSTON)])
        assert [a.key for a in hits[0]] == ["s|a1"]
        assert hits[1] == []

    run(body)


def test_update_replaces_the_cover_and_the_content(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        await index.put_alert(make_active_alert(version=1), frozenset({cell(AUSTIN)}))
        await index.put_alert(make_active_alert(version=2), frozenset({cell(HOUSTON)}))
        hits = await index.alerts_at([cell(AUSTIN), cell(HOUSTON)])
        assert hits[0] == []
        assert [(a.version, a.card["headline"]) for a in hits[1]] == [(2, "v2")]

    run(body)


def test_removed_alert_is_never_matched_again(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        await index.put_alert(make_active_alert(), frozenset({cell(AUSTIN)}))
        assert await index.remove_alert("s|a1") is True
        assert await index.alerts_at([cell(AUSTIN)]) == [[]]
        assert await index.get_alert("s|a1") is None
        assert await index.remove_alert("s|a1") is False

    run(body)


def test_overlapping_alerts_are_both_returned_once(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        c = cell(AUSTIN)
        await index.put_alert(make_active_alert("s|a1"), frozenset({h3i.cell_to_parent(c, 3), c}))
        await index.put_alert(make_active_alert("s|a2"), frozenset({h3i.cell_to_parent(c, 7)}))
        [hits] = await index.alerts_at([c])
        assert sorted(a.key for a in hits) == ["s|a1", "s|a2"]
        assert sorted(a.key for a in await index.active_alerts()) == ["s|a1", "s|a2"]

    run(body)


def test_cells_finer_than_the_index_resolution_are_refused(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        with pytest.raises(ValueError, match="finer"):
            await index.put_alert(make_active_alert(), frozenset({cell(AUSTIN, RES + 1)}))

    run(body)


def test_dedup_remembers_pairs_independently(run: Runner) -> None:
    async def body(_: Any, dedup: Any) -> None:
        pairs = [("s|a1", "u1"), ("s|a1", "u2"), ("s|a2", "u1")]
        assert await dedup.unseen(pairs) == [True, True, True]
        far = 4_102_444_800_000  # 2100-01-01
        await dedup.mark_seen([("s|a1", "u1")], [far])
        assert await dedup.unseen(pairs) == [False, True, True]

    run(body)


def test_dedup_answers_in_order_and_counts_across_alerts_and_large_batches(run: Runner) -> None:
    async def body(_: Any, dedup: Any) -> None:
        far = 4_102_444_800_000
        many = [("s|big", f"u{i}") for i in range(25_000)]  # more than one command's worth
        assert await dedup.cards_of("s|big") == 0
        assert await dedup.mark_seen(many[::3], [far] * len(many[::3])) == len(many[::3])
        assert await dedup.mark_seen([("s|other", "u1")], [far]) == 1
        assert await dedup.mark_seen(many[:7], [far] * 7) == 4  # u0, u3, u6 were recorded
        assert await dedup.cards_of("s|big") == len(many[::3]) + 4
        mixed = [("s|other", "u1"), *many, ("s|other", "u2"), ("s|none", "u0")]
        expected = [False] + [i % 3 != 0 and i >= 7 for i in range(25_000)] + [True, True]
        assert await dedup.unseen(mixed) == expected
        assert await dedup.unseen(many[6:10]) == [False, True, True, False]
        assert await dedup.unseen([]) == []

    run(body)


def test_an_index_that_lost_its_contents_refuses_to_match(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        assert await index.is_built() is False
        with pytest.raises(IndexNotBuilt):
            await index.alerts_at([cell(AUSTIN)])
        await index.mark_built()
        assert await index.alerts_at([cell(AUSTIN)]) == [[]]

    run(body, built=False)


def test_only_one_of_two_removals_reports_the_removal(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        await index.put_alert(make_active_alert(), frozenset({cell(AUSTIN)}))
        first, second = await asyncio.gather(index.remove_alert("s|a1"), index.remove_alert("s|a1"))
        assert sorted([first, second]) == [False, True]

    run(body)


def test_tombstone_keeps_the_highest_cancel_version(run: Runner) -> None:
    async def body(index: Any, _: Any) -> None:
        far = 4_102_444_800_000
        assert await index.cancelled_version("s|a1") is None
        await index.tombstone("s|a1", 5, far)
        await index.tombstone("s|a1", 3, far)
        assert await index.cancelled_version("s|a1") == 5

    run(body)

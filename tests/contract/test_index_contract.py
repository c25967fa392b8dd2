"""One contract, three implementations: the Redis cell index, its in-process twin, and the
worker's replica (lookups in process, loaded from Redis). Every test runs against the twin,
the real server and a real Redis Cluster (where every key must work unchanged), and the
replica on each of those two. The replica's own promises (what other instances see, and
when) follow the contract."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import h3.api.basic_int as h3i
import pytest

from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.replica import ReplicatedCellIndex
from pipeline.errors import IndexNotBuilt
from tests.support.factories import make_active_alert, now_ms

RES = 9
AUSTIN = (30.2672, -97.7431)
HOUSTON = (29.7604, -95.3698)

Body = Callable[[Any], Awaitable[None]]
Runner = Callable[..., None]


@pytest.fixture(
    params=["memory", "redis", "redis-cluster", "replica-redis", "replica-redis-cluster"]
)
def run(request: pytest.FixtureRequest, connect: Callable[[str], Any]) -> Runner:
    """Runs ``body(index)`` on a fresh event loop against one implementation."""

    def runner(body: Body, built: bool = True) -> None:
        async def main() -> None:
            if request.param == "memory":
                index: Any = MemoryCellIndex(resolution=RES, built=False)
                if built:
                    await index.mark_built()
                await body(index)
                return
            replica = request.param.startswith("replica-")
            client = connect(request.param.removeprefix("replica-"))
            prefix = f"ct{uuid.uuid4().hex[:8]}"
            try:
                index = RedisCellIndex(client, prefix=prefix, resolution=RES)
                if replica:
                    index = ReplicatedCellIndex(index)
                if built:
                    await index.mark_built()
                await body(index)
            finally:
                await client.aclose()

        asyncio.run(main())

    return runner


def cell(latlon: tuple[float, float], res: int = RES) -> int:
    return int(h3i.latlng_to_cell(latlon[0], latlon[1], res))


def test_alert_is_found_through_a_coarse_compact_cell(run: Runner) -> None:
    async def body(index: Any) -> None:
        coarse = h3i.cell_to_parent(cell(AUSTIN), 5)
        await index.put_alert(make_active_alert(), frozenset({coarse}))
        hits = await index.alerts_at([cell(AUSTIN), cell(HOUSTON)])
        assert [a.key for a in hits[0]] == ["s|a1"]
        assert list(hits[1]) == []

    run(body)


def test_update_replaces_the_cover_and_the_content(run: Runner) -> None:
    async def body(index: Any) -> None:
        await index.put_alert(make_active_alert(version=1), frozenset({cell(AUSTIN)}))
        await index.put_alert(make_active_alert(version=2), frozenset({cell(HOUSTON)}))
        hits = await index.alerts_at([cell(AUSTIN), cell(HOUSTON)])
        assert list(hits[0]) == []
        assert [(a.version, a.card["headline"]) for a in hits[1]] == [(2, "v2")]

    run(body)


def test_removed_alert_is_never_matched_again(run: Runner) -> None:
    async def body(index: Any) -> None:
        await index.put_alert(make_active_alert(), frozenset({cell(AUSTIN)}))
        assert await index.remove_alert("s|a1") is True
        assert [list(h) for h in await index.alerts_at([cell(AUSTIN)])] == [[]]
        assert await index.get_alert("s|a1") is None
        assert await index.remove_alert("s|a1") is False

    run(body)


def test_overlapping_alerts_are_both_returned_once(run: Runner) -> None:
    async def body(index: Any) -> None:
        c = cell(AUSTIN)
        await index.put_alert(make_active_alert("s|a1"), frozenset({h3i.cell_to_parent(c, 3), c}))
        await index.put_alert(make_active_alert("s|a2"), frozenset({h3i.cell_to_parent(c, 7)}))
        [hits] = await index.alerts_at([c])
        assert sorted(a.key for a in hits) == ["s|a1", "s|a2"]
        assert sorted(a.key for a in await index.active_alerts()) == ["s|a1", "s|a2"]

    run(body)


def test_cells_finer_than_the_index_resolution_are_refused(run: Runner) -> None:
    async def body(index: Any) -> None:
        with pytest.raises(ValueError, match="finer"):
            await index.put_alert(make_active_alert(), frozenset({cell(AUSTIN, RES + 1)}))

    run(body)


def test_an_index_that_lost_its_contents_refuses_to_match(run: Runner) -> None:
    async def body(index: Any) -> None:
        assert await index.is_built() is False
        with pytest.raises(IndexNotBuilt):
            await index.alerts_at([cell(AUSTIN)])
        await index.mark_built()
        assert [list(h) for h in await index.alerts_at([cell(AUSTIN)])] == [[]]

    run(body, built=False)


def test_only_one_of_two_removals_reports_the_removal(run: Runner) -> None:
    async def body(index: Any) -> None:
        await index.put_alert(make_active_alert(), frozenset({cell(AUSTIN)}))
        first, second = await asyncio.gather(index.remove_alert("s|a1"), index.remove_alert("s|a1"))
        assert sorted([first, second]) == [False, True]

    run(body)


def test_tombstone_keeps_the_highest_cancel_version(run: Runner) -> None:
    async def body(index: Any) -> None:
        far = 4_102_444_800_000
        assert await index.cancelled_version("s|a1") is None
        await index.tombstone("s|a1", 5, far)
        await index.tombstone("s|a1", 3, far)
        assert await index.cancelled_version("s|a1") == 5

    run(body)


def test_an_owed_lifecycle_event_is_kept_until_paid(run: Runner) -> None:
    async def body(index: Any) -> None:
        assert await index.owed("s|a1") is None
        await index.owe("s|a1", 5, b'{"state":"issued"}', now_ms() + 60_000)
        assert await index.owed("s|a1") == (5, b'{"state":"issued"}')
        await index.paid("s|a1", 4)  # an older version paid: the newer debt stays
        assert await index.owed("s|a1") == (5, b'{"state":"issued"}')
        await index.paid("s|a1", 5)
        assert await index.owed("s|a1") is None

    run(body)

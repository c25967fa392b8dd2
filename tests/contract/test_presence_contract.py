"""The presence store contract, on the in-process twin, the real Redis server and a real
Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import h3.api.basic_int as h3i
import pytest

from pipeline.adapters.memory.presence import MemoryPresenceStore
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.domain.models import Sighting

RES = 10
WINDOW = 30 * 60_000
NOW = 1_795_400_000_000
AUSTIN = (30.2672, -97.7431)
DALLAS = (32.7767, -96.7970)

Body = Callable[[Any], Awaitable[None]]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def run(request: pytest.FixtureRequest, connect: Callable[[str], Any]) -> Callable[[Body], None]:
    def runner(body: Body) -> None:
        async def main() -> None:
            if request.param == "memory":
                await body(MemoryPresenceStore(window_ms=WINDOW))
                return
            client = connect(request.param)
            try:
                prefix = f"pc{uuid.uuid4().hex[:8]}"
                await body(RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW))
            finally:
                await client.aclose()

        asyncio.run(main())

    return runner


def cell(latlon: tuple[float, float]) -> int:
    return int(h3i.latlng_to_cell(latlon[0], latlon[1], RES))


async def present(store: Any, cover: frozenset[int], since: int) -> list[str]:
    mine = frozenset({0})  # the partition a Sighting is of by default
    return sorted([u async for chunk in store.present_in(cover, since, mine, 2) for u in chunk])


def test_users_are_found_through_coarse_and_fine_cover_cells(run: Callable[[Body], None]) -> None:
    async def body(store: Any) -> None:
        now = 4_000_000_000_000  # in the future, so nothing has expired in Redis
        await store.record([Sighting("a", cell(AUSTIN), now), Sighting("d", cell(DALLAS), now)])
        coarse = frozenset({h3i.cell_to_parent(cell(AUSTIN), 3)})
        fine = frozenset({h3i.cell_to_parent(cell(AUSTIN), 8)})
        assert await present(store, coarse, now - WINDOW) == ["a"]
        assert await present(store, fine, now - WINDOW) == ["a"]
        neighbour = frozenset(h3i.grid_ring(h3i.cell_to_parent(cell(AUSTIN), 8), 1))
        assert await present(store, neighbour, now - WINDOW) == []

    run(body)


def test_only_the_latest_sighting_counts(run: Callable[[Body], None]) -> None:
    async def body(store: Any) -> None:
        now = 4_000_000_000_000
        await store.record([Sighting("a", cell(AUSTIN), now)])
        await store.record([Sighting("a", cell(DALLAS), now + 60_000)])
        austin = frozenset({h3i.cell_to_parent(cell(AUSTIN), 4)})
        dallas = frozenset({h3i.cell_to_parent(cell(DALLAS), 4)})
        assert await present(store, austin, now - WINDOW) == []
        assert await present(store, dallas, now - WINDOW) == ["a"]

    run(body)


def test_sightings_older_than_the_window_do_not_count(run: Callable[[Body], None]) -> None:
    async def body(store: Any) -> None:
        now = 4_000_000_000_000
        await store.record([Sighting("a", cell(AUSTIN), now)])
        austin = frozenset({h3i.cell_to_parent(cell(AUSTIN), 4)})
        assert await present(store, austin, now + 1) == []

    run(body)


def test_many_users_come_back_in_bounded_chunks(run: Callable[[Body], None]) -> None:
    async def body(store: Any) -> None:
        now = 4_000_000_000_000
        base = cell(AUSTIN)
        neighbours = sorted(h3i.grid_disk(base, 3))
        await store.record([Sighting(f"u{i}", c, now) for i, c in enumerate(neighbours)])
        area = frozenset({h3i.cell_to_parent(base, 6)})
        chunks = [chunk async for chunk in store.present_in(area, now - WINDOW, frozenset({0}), 5)]
        assert all(1 <= len(chunk) <= 5 for chunk in chunks)
        seen = [u for chunk in chunks for u in chunk]
        assert len(seen) == len(set(seen)) == len(neighbours)

    run(body)


def test_a_user_who_stays_into_the_next_slot_then_moves_is_found_only_where_it_went(
    run: Callable[[Body], None],
) -> None:
    """A user in Austin across a slot boundary who then drives to Dallas: a fan-out over
    Austin, fresh since a window before, finds no trace of the older slot's sighting."""

    async def body(store: Any) -> None:
        boundary = (4_000_000_000_000 // WINDOW + 1) * WINDOW
        austin_near = h3i.grid_disk(cell(AUSTIN), 1)[1]
        await store.record([Sighting("a", cell(AUSTIN), boundary - 60_000)])
        await store.record([Sighting("a", austin_near, boundary + 60_000)])
        await store.record([Sighting("a", cell(DALLAS), boundary + 120_000)])
        since = boundary + 120_000 - WINDOW
        austin = frozenset({h3i.cell_to_parent(cell(AUSTIN), 4)})
        dallas = frozenset({h3i.cell_to_parent(cell(DALLAS), 4)})
        assert await present(store, austin, since) == []
        assert await present(store, dallas, since) == ["a"]

    run(body)


def test_a_user_going_back_and_forth_is_found_where_it_was_sighted_last(
    run: Callable[[Body], None],
) -> None:
    async def body(store: Any) -> None:
        now = 4_000_000_000_000
        austin = frozenset({h3i.cell_to_parent(cell(AUSTIN), 4)})
        dallas = frozenset({h3i.cell_to_parent(cell(DALLAS), 4)})
        for step, (here, there) in enumerate([(AUSTIN, dallas), (DALLAS, austin)] * 3):
            await store.record([Sighting("a", cell(here), now + step * 1000)])
            await store.record([Sighting("b", cell(AUSTIN), now + step * 1000)])
            where = austin if here == AUSTIN else dallas
            assert await present(store, where, now - WINDOW) == (
                ["a", "b"] if here == AUSTIN else ["a"]
            )
            assert "a" not in await present(store, there, now - WINDOW)

    run(body)


def test_a_read_names_the_partitions_whose_users_it_wants(run: Callable[[Body], None]) -> None:
    async def body(store: Any) -> None:
        now = 4_000_000_000_000
        await store.record(
            [Sighting(f"u{p}", cell(AUSTIN), now, partition=p) for p in range(6)]
            + [Sighting("far", cell(DALLAS), now, partition=2)]
        )
        austin = frozenset({h3i.cell_to_parent(cell(AUSTIN), 4)})

        async def of(partitions: frozenset[int]) -> list[str]:
            chunks = store.present_in(austin, now - WINDOW, partitions)
            return sorted([u async for chunk in chunks for u in chunk])

        assert await of(frozenset({2})) == ["u2"]
        assert await of(frozenset({0, 3, 9})) == ["u0", "u3"]
        assert await of(frozenset()) == []
        assert await of(frozenset(range(6))) == [f"u{p}" for p in range(6)]

    run(body)

"""What every worker's replica of the index promises beyond the contract: instances over
one Redis (one per worker) follow each other's writes by their next lookup, a fresh one
loads the whole index on its first, and a rebuilt index replaces what a replica held. On
the real server and on a real Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import h3.api.basic_int as h3i
import pytest
from redis.asyncio import RedisCluster

from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.replica import ReplicatedCellIndex
from pipeline.errors import IndexNotBuilt
from tests.support.factories import make_active_alert

RES = 9
AUSTIN = h3i.latlng_to_cell(30.2672, -97.7431, RES)
HOUSTON = h3i.latlng_to_cell(29.7604, -95.3698, RES)
NEAR_AUSTIN = h3i.cell_to_parent(AUSTIN, 5)

Workers = Callable[[int], list[ReplicatedCellIndex]]
Body = Callable[[Workers, Any, str], Awaitable[None]]


@pytest.fixture(params=["redis", "redis-cluster"])
def run(request: pytest.FixtureRequest, connect: Callable[[str], Any]) -> Callable[[Body], None]:
    """Runs ``body(workers, client, prefix)`` on a fresh event loop: ``workers(n)`` gives
    ``n`` replicas over one Redis prefix, each on a client of its own, as workers have."""

    def runner(body: Body) -> None:
        async def main() -> None:
            prefix = f"rp{uuid.uuid4().hex[:8]}"
            clients = [connect(request.param)]

            def workers(n: int) -> list[ReplicatedCellIndex]:
                made = []
                for _ in range(n):
                    clients.append(connect(request.param))
                    made.append(
                        ReplicatedCellIndex(
                            RedisCellIndex(clients[-1], prefix=prefix, resolution=RES)
                        )
                    )
                return made

            try:
                await body(workers, clients[0], prefix)
            finally:
                for client in clients:
                    await client.aclose()

        asyncio.run(main())

    return runner


async def keys_at(index: ReplicatedCellIndex, *cells: int) -> list[list[tuple[str, int]]]:
    return [sorted((a.key, a.version) for a in hits) for hits in await index.alerts_at(cells)]


def test_a_cancel_through_one_worker_stops_every_other_at_its_next_lookup(run: Any) -> None:
    async def body(workers: Workers, client: Any, prefix: str) -> None:
        writer, first, second = workers(3)
        await writer.mark_built()
        await writer.put_alert(make_active_alert("s|a1"), frozenset({NEAR_AUSTIN}))
        await writer.put_alert(make_active_alert("s|a2"), frozenset({HOUSTON}))
        for reader in (first, second):
            assert await keys_at(reader, AUSTIN, HOUSTON) == [[("s|a1", 1)], [("s|a2", 1)]]

        assert await writer.remove_alert("s|a1") is True
        for reader in (first, second):
            assert await keys_at(reader, AUSTIN, HOUSTON) == [[], [("s|a2", 1)]]

    run(body)


def test_an_update_through_one_worker_reaches_every_other_at_its_next_lookup(run: Any) -> None:
    async def body(workers: Workers, client: Any, prefix: str) -> None:
        writer, first, second = workers(3)
        await writer.mark_built()
        await writer.put_alert(make_active_alert("s|a1", 1), frozenset({AUSTIN}))
        for reader in (first, second):
            assert await keys_at(reader, AUSTIN, HOUSTON) == [[("s|a1", 1)], []]

        await writer.put_alert(make_active_alert("s|a1", 2), frozenset({HOUSTON}))
        for reader in (first, second):
            assert await keys_at(reader, AUSTIN, HOUSTON) == [[], [("s|a1", 2)]]
            [[alert]] = await reader.alerts_at([HOUSTON])
            assert alert.card["headline"] == "v2"

    run(body)


def test_lookups_racing_an_update_see_the_old_cover_or_the_new_never_both(run: Any) -> None:
    async def body(workers: Workers, client: Any, prefix: str) -> None:
        writer, reader = workers(2)
        await writer.mark_built()
        await writer.put_alert(make_active_alert("s|a1", 1), frozenset({AUSTIN}))
        seen: set[tuple[tuple[str, int], ...]] = set()

        async def look() -> None:
            for _ in range(40):
                [austin, houston] = await keys_at(reader, AUSTIN, HOUSTON)
                seen.add(tuple(austin + houston))
                await asyncio.sleep(0)

        async def update() -> None:
            for version in range(2, 12):
                where = HOUSTON if version % 2 else AUSTIN
                await writer.put_alert(make_active_alert("s|a1", version), frozenset({where}))

        await asyncio.gather(look(), update())
        assert all(len(hits) == 1 for hits in seen), seen
        assert await keys_at(reader, AUSTIN, HOUSTON) == [[], [("s|a1", 11)]]

    run(body)


def test_a_fresh_worker_loads_the_whole_index_on_its_first_lookup(run: Any) -> None:
    async def body(workers: Workers, client: Any, prefix: str) -> None:
        [writer] = workers(1)
        with pytest.raises(IndexNotBuilt):
            await writer.alerts_at([AUSTIN])
        await writer.put_alert(make_active_alert("s|a1"), frozenset({NEAR_AUSTIN}))
        await writer.put_alert(make_active_alert("s|a2", 3), frozenset({AUSTIN, HOUSTON}))
        await writer.put_alert(make_active_alert("s|a3"), frozenset({HOUSTON}))
        await writer.remove_alert("s|a3")
        [fresh] = workers(1)
        with pytest.raises(IndexNotBuilt):  # written, but never marked whole
            await fresh.alerts_at([AUSTIN])
        await writer.mark_built()
        [late] = workers(1)
        for reader in (fresh, late):
            assert await keys_at(reader, AUSTIN, HOUSTON) == [
                [("s|a1", 1), ("s|a2", 3)],
                [("s|a2", 3)],
            ]

    run(body)


def test_a_rebuilt_index_replaces_what_the_replica_held(run: Any) -> None:
    async def body(workers: Workers, client: Any, prefix: str) -> None:
        writer, reader = workers(2)
        await writer.mark_built()
        await writer.put_alert(make_active_alert("s|a1"), frozenset({AUSTIN}))
        assert await keys_at(reader, AUSTIN, HOUSTON) == [[("s|a1", 1)], []]

        await forget_everything(client, prefix)  # Redis restarted empty
        with pytest.raises(IndexNotBuilt):
            await reader.alerts_at([AUSTIN])
        # Rebuilt from a topic where a1 was cancelled meanwhile and a2 issued: as many
        # changes counted as before, so only the new rebuild token tells them apart.
        await writer.put_alert(make_active_alert("s|a2"), frozenset({HOUSTON}))
        await writer.mark_built()
        assert await keys_at(reader, AUSTIN, HOUSTON) == [[], [("s|a2", 1)]]

    run(body)


def test_a_record_redis_drops_on_its_own_leaves_the_replica_within_the_recheck(
    run: Any,
) -> None:
    async def body(workers: Workers, client: Any, prefix: str) -> None:
        [writer] = workers(1)
        reader = ReplicatedCellIndex(
            RedisCellIndex(client, prefix=prefix, resolution=RES), recheck_s=0.2
        )
        await writer.mark_built()
        await writer.put_alert(make_active_alert("s|a1"), frozenset({AUSTIN}))
        assert await keys_at(reader, AUSTIN) == [[("s|a1", 1)]]
        # As when the record reaches its expiry (PXAT) in Redis: no change is counted.
        await client.delete(f"{prefix}:alert:{{s|a1}}")
        await asyncio.sleep(0.3)
        assert await keys_at(reader, AUSTIN) == [[]]

    run(body)


async def forget_everything(client: Any, prefix: str) -> None:
    """Delete every key under ``prefix``, one command per key (as a flush would)."""
    if isinstance(client, RedisCluster):
        await client.initialize()  # learns the nodes, if no command did yet
        keys = []
        for node in client.get_primaries():
            keys += await client.execute_command("KEYS", f"{prefix}:*", target_nodes=node)
    else:
        keys = await client.keys(f"{prefix}:*")
    for key in keys:
        await client.delete(key)

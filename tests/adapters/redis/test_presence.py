"""What a presence write costs on the real Redis and Redis Cluster (commands counted by
the servers, ``INFO commandstats``), and that the writes it skips change no answer: users
who move, restarts, partitions, failed writes.

The budget is a user-facing one: at most one Redis command per location, on average, for
a worker's batches of locations."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import h3.api.basic_int as h3i
import pytest
from redis.asyncio import Redis, RedisCluster

from pipeline.adapters.memory.presence import MemoryPresenceStore
from pipeline.adapters.redis.client import redis_client
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.domain.models import Sighting
from pipeline.errors import IndexUnavailable
from tests.support.redis_cluster import cluster_client
from tests.support.services import Services

pytestmark = pytest.mark.integration

RES = 10
WINDOW = 30 * 60_000
# In the future, so nothing expires in Redis; 400 s into its slot.
NOW = 4_000_000_000_000
SLOT = NOW // WINDOW
AUSTIN = (30.2672, -97.7431)
DALLAS = (32.7767, -96.7970)
HOUSTON = (29.7604, -95.3698)
WRITES = ("set", "hset", "hdel", "pexpireat")
EXPIRY = (SLOT + 2) * WINDOW  # the end of the slot after NOW's

Client = Redis | RedisCluster
Body = Callable[[Client, str], Awaitable[None]]


@pytest.fixture(params=["redis", "redis-cluster"])
def run(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    """``run(body)``: ``body(client, prefix)`` on a new client of the variant, with a
    prefix of its own."""

    def runner(body: Body) -> None:
        async def main() -> None:
            if request.param == "redis-cluster":
                client: Client = cluster_client(request.getfixturevalue("redis_cluster"))
            else:
                services: Services = request.getfixturevalue("services")
                client = redis_client(services.redis_url, password=None, socket_timeout_s=5)
            try:
                await body(client, f"pw{uuid.uuid4().hex[:8]}")
            finally:
                await client.aclose()

        asyncio.run(main())

    return runner


def cell(latlon: tuple[float, float]) -> int:
    return int(h3i.latlng_to_cell(latlon[0], latlon[1], RES))


def bucket_of(latlon: tuple[float, float]) -> frozenset[int]:
    return frozenset({h3i.cell_to_parent(cell(latlon), 5)})


def hash_key(prefix: str, latlon: tuple[float, float], slot: int = SLOT, partition: int = 0) -> str:
    """The documented layout ``p:pres:b:<bucket>:<slot>:<partition>``."""
    return f"{prefix}:pres:b:{h3i.cell_to_parent(cell(latlon), 5):x}:{slot}:{partition}"


async def present(
    store: Any,
    cover: frozenset[int],
    since: int = NOW - WINDOW,
    partitions: frozenset[int] = frozenset({0}),
) -> list[str]:
    return sorted([u async for c in store.present_in(cover, since, partitions) for u in c])


async def keys_of(client: Client, prefix: str) -> list[str]:
    if isinstance(client, RedisCluster):
        found = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    else:
        found = await client.keys(f"{prefix}:*")
    return sorted(k.decode() if isinstance(k, bytes) else k for k in found)


async def write_counts(client: Client) -> Counter[str]:
    """Calls of the write commands so far, summed over the servers (every master of a
    cluster)."""
    if isinstance(client, RedisCluster):
        per_node = await client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        sections = list(per_node.values())
    else:
        sections = [await client.info("commandstats")]
    counts: Counter[str] = Counter()
    for stats in sections:
        for name in WRITES:
            counts[name] += stats.get(f"cmdstat_{name}", {}).get("calls", 0)
    return counts


async def costs(client: Client, write: Callable[[], Awaitable[None]]) -> Counter[str]:
    """The write commands ``write()`` sent (the servers' counts before and after)."""
    before = await write_counts(client)
    await write()
    after = await write_counts(client)
    return Counter({name: after[name] - before[name] for name in WRITES})


def test_a_user_sighted_again_at_the_same_place_costs_one_field_of_one_hash(
    run: Callable[[Body], None],
) -> None:
    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        near = sorted(h3i.grid_disk(cell(AUSTIN), 2))

        async def report() -> None:
            for i in range(50):
                await store.record([Sighting("a", near[i % len(near)], NOW + i * 1000)])

        spent = await costs(client, report)
        assert spent == Counter(hset=50, pexpireat=1, hdel=0, set=0)
        # No key per user: the bucket's hash is all there is, and it expires on its own.
        assert await keys_of(client, prefix) == [hash_key(prefix, AUSTIN)]
        assert await client.hlen(hash_key(prefix, AUSTIN)) == 1
        assert await client.pexpiretime(hash_key(prefix, AUSTIN)) == EXPIRY
        last = near[49 % len(near)]
        assert await present(store, frozenset({last})) == ["a"]
        assert await present(store, frozenset({near[48 % len(near)]})) == []

    run(body)


def test_a_user_who_moves_is_found_over_the_new_bucket_and_not_the_old_one(
    run: Callable[[Body], None],
) -> None:
    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await store.record([Sighting("a", cell(AUSTIN), NOW), Sighting("b", cell(AUSTIN), NOW)])
        for step, (here, there) in enumerate([(DALLAS, AUSTIN), (HOUSTON, DALLAS)], 1):
            await store.record([Sighting("a", cell(here), NOW + step * 1000)])
            assert await present(store, bucket_of(here)) == ["a"]
            assert await present(store, bucket_of(there)) == ([] if there != AUSTIN else ["b"])
        # The next slot, in the same bucket, then another bucket: no trace left behind.
        later = (SLOT + 1) * WINDOW
        await store.record([Sighting("a", cell(HOUSTON), later)])
        await store.record([Sighting("a", cell(DALLAS), later + 1000)])
        assert await present(store, bucket_of(HOUSTON), later + 1000 - WINDOW) == []
        assert await present(store, bucket_of(DALLAS), later + 1000 - WINDOW) == ["a"]

    run(body)


def test_after_a_restart_a_move_leaves_the_old_sighting_only_until_it_is_stale(
    run: Callable[[Body], None],
) -> None:
    """The documented bound: a store that does not know the user (a new worker) writes
    the new place only; the old sighting stays where it was, older than the new one, and
    stops counting once it is outside the window; a read over both places keeps the new."""

    async def body(client: Client, prefix: str) -> None:
        before = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await before.record([Sighting("a", cell(AUSTIN), NOW)])
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await store.record([Sighting("a", cell(DALLAS), NOW + 60_000)])
        assert await present(store, bucket_of(DALLAS)) == ["a"]
        assert await present(store, bucket_of(AUSTIN), since=NOW + 1) == []
        both = bucket_of(AUSTIN) | bucket_of(DALLAS)
        carded = [u async for c in store.present_in(both, NOW - WINDOW, frozenset({0})) for u in c]
        assert sorted(set(carded)) == ["a"]

    run(body)


def test_users_are_kept_and_read_under_their_partition(run: Callable[[Body], None]) -> None:
    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await store.record(
            [Sighting(f"u{p}", cell(AUSTIN), NOW, partition=p) for p in (0, 1, 2, 5)]
        )
        assert await keys_of(client, prefix) == sorted(
            hash_key(prefix, AUSTIN, partition=p) for p in (0, 1, 2, 5)
        )
        austin = bucket_of(AUSTIN)
        assert await present(store, austin, partitions=frozenset({1})) == ["u1"]
        assert await present(store, austin, partitions=frozenset({0, 5, 7})) == ["u0", "u5"]
        assert await present(store, austin, partitions=frozenset()) == []
        with pytest.raises(ValueError):
            await present(store, austin, partitions=None)  # type: ignore[arg-type]

    run(body)


def test_a_hash_recreated_under_users_the_store_placed_there_expires_again(
    run: Callable[[Body], None],
) -> None:
    """The hash of users the store believes in place is gone (it expired early, say, or
    the server lost it): writing them again recreates it, and it gets its expiry."""

    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        key = hash_key(prefix, AUSTIN)
        await store.record([Sighting("a", cell(AUSTIN), NOW)])
        await client.delete(key)
        await store.record([Sighting("a", cell(AUSTIN), NOW + 1000)])
        assert await client.pexpiretime(key) == EXPIRY
        # A hash its last user left is deleted by Redis; written again, it expires again.
        await store.record([Sighting("a", cell(DALLAS), NOW + 2000)])
        assert await client.exists(key) == 0
        await store.record([Sighting("b", cell(AUSTIN), NOW + 3000)])
        assert await client.pexpiretime(key) == EXPIRY

    run(body)


def test_a_failed_write_is_not_remembered(run: Callable[[Body], None]) -> None:
    """A write that Redis fails (here a key of the wrong type where a hash should be)
    raises, and the store does not believe it wrote: the retry writes what is needed,
    expiry included."""

    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await store.record([Sighting("a", cell(AUSTIN), NOW)])
        await client.delete(hash_key(prefix, AUSTIN))  # gone, unknown to the store
        await client.set(hash_key(prefix, DALLAS), "not a hash")
        batch = [Sighting("a", cell(AUSTIN), NOW + 1000), Sighting("d", cell(DALLAS), NOW)]
        with pytest.raises(IndexUnavailable):
            await store.record(batch)  # Austin's hash was recreated, without its expiry
        await client.delete(hash_key(prefix, DALLAS))
        await store.record(batch)
        assert await client.pexpiretime(hash_key(prefix, AUSTIN)) == EXPIRY
        assert await client.pexpiretime(hash_key(prefix, DALLAS)) == EXPIRY
        assert await present(store, bucket_of(AUSTIN)) == ["a"]
        assert await present(store, bucket_of(DALLAS)) == ["d"]

    run(body)


def test_the_store_remembers_the_latest_users_within_known_users(
    run: Callable[[Body], None],
) -> None:
    """A move of a user written recently deletes its old entry; once ``known_users``
    others were written since, the user is forgotten (a move leaves the old entry to
    expire); the store holds no more users than the bound, beyond one batch's; 0
    remembers nothing."""

    async def body(client: Client, prefix: str) -> None:
        async def deletes(store: RedisPresenceStore, *users: str, at: int, to: int) -> int:
            """How many HDELs the sightings of ``users`` at ``to`` sent."""

            async def write() -> None:
                await store.record([Sighting(u, to, at) for u in users])

            return (await costs(client, write))["hdel"]

        austin, dallas = cell(AUSTIN), cell(DALLAS)
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW, known_users=4)
        assert await deletes(store, "a", "b", at=NOW, to=austin) == 0
        assert await deletes(store, "a", at=NOW + 1, to=dallas) == 1  # known: deleted there
        for i, other in enumerate("cdef"):
            assert await deletes(store, other, at=NOW + 2 + i, to=austin) == 0
        assert store.remembered <= 4
        assert await deletes(store, "b", at=NOW + 7, to=dallas) == 0  # forgotten
        many = [f"m{i}" for i in range(50)]
        assert await deletes(store, *many, at=NOW + 8, to=austin) == 0
        assert store.remembered <= 4 + len(many)
        assert await deletes(store, *many[:10], at=NOW + 9, to=dallas) == 1  # one hash
        assert await present(store, bucket_of(DALLAS)) == sorted(["a", "b", *many[:10]])

        off = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW, known_users=0)
        assert await deletes(off, "u1", at=NOW + 10, to=austin) == 0
        assert await deletes(off, "u1", at=NOW + 11, to=dallas) == 0
        assert off.remembered == 0

    run(body)


def worker_batches(
    users: int = 4000, per_user: int = 5, moving: float = 0.02, seed: int = 7
) -> Iterator[list[Sighting]]:
    """A worker's location batches (1000 locations, in time order): ``users`` users spread
    over the 331 buckets around Austin, each reporting ``per_user`` times, in rounds, from
    a cell anywhere in its bucket; a ``moving`` share of the reports comes from a
    neighbouring bucket, where the user then stays."""
    rng = random.Random(seed)
    buckets = sorted(h3i.grid_disk(h3i.cell_to_parent(cell(AUSTIN), 5), 10))
    home = {f"user-{i}": rng.choice(buckets) for i in range(users)}
    sightings: list[Sighting] = []
    for _ in range(per_user):
        order = list(home)
        rng.shuffle(order)
        for user in order:
            if rng.random() < moving:
                home[user] = rng.choice(h3i.grid_ring(home[user], 1))
            child = h3i.child_pos_to_cell(home[user], RES, rng.randrange(7**5))
            sightings.append(Sighting(user, child, NOW + 15 * len(sightings)))
    for start in range(0, len(sightings), 1000):
        yield sightings[start : start + 1000]


def test_a_location_costs_at_most_one_redis_command_on_average(
    run: Callable[[Body], None],
) -> None:
    """20,000 locations of 4,000 users over a few hundred buckets, in a worker's batches of
    1,000: at most one Redis command per location (before the store remembered where it
    wrote each user, it was about 1.65). The answers stay those of the in-process twin."""

    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        twin = MemoryPresenceStore(window_ms=WINDOW)
        batches = list(worker_batches())
        locations = sum(map(len, batches))
        assert locations == 20_000

        async def write() -> None:
            for batch in batches:
                await store.record(batch)
                await twin.record(batch)

        spent = await costs(client, write)
        assert sum(spent.values()) <= locations, spent
        assert spent["set"] == 0, spent  # no key per user

        since = NOW - WINDOW
        buckets = sorted(h3i.grid_disk(h3i.cell_to_parent(cell(AUSTIN), 5), 10))
        around = frozenset(h3i.grid_disk(h3i.cell_to_parent(cell(AUSTIN), 5), 11))
        everyone = await present(store, around, since)
        assert len(everyone) == 4000
        assert everyone == await present(twin, around, since)
        for bucket in buckets[::10]:
            fine = frozenset(h3i.cell_to_children(bucket, 6)[:3])
            for cover in (frozenset({bucket}), fine):
                assert await present(store, cover, since) == await present(twin, cover, since)

    run(body)


def test_values_keep_the_cell_and_the_time_exactly(run: Callable[[Body], None]) -> None:
    """A sighting's 8 bytes give back its cell at every resolution from the bucket's
    down, and its millisecond (read through the fan-out: the cell decides inside or
    out, the time decides fresh or stale)."""

    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        fine = int(h3i.latlng_to_cell(*AUSTIN, 15))
        sightings = [
            Sighting(f"r{res}", h3i.cell_to_parent(fine, res), NOW + res) for res in range(5, 16)
        ]
        await store.record(sightings)
        for s in sightings:
            assert await present(store, frozenset({s.cell})) == sorted(
                t.user_id
                for t in sightings
                if h3i.get_resolution(t.cell) >= h3i.get_resolution(s.cell)
            )
            assert s.user_id in await present(store, frozenset({s.cell}), since=s.ts)
            assert s.user_id not in await present(store, frozenset({s.cell}), since=s.ts + 1)

    run(body)

"""What a presence write costs on the real Redis and Redis Cluster (commands counted by
the servers, ``INFO commandstats``), and that the writes it skips change no answer: users
who move, restarts, a worker that gets a user's partition back, failed writes.

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


def hash_key(prefix: str, latlon: tuple[float, float], slot: int = SLOT) -> str:
    """The documented layout ``p:pres:b:<bucket>:<slot>``."""
    return f"{prefix}:pres:b:{h3i.cell_to_parent(cell(latlon), 5):x}:{slot}"


async def present(store: Any, cover: frozenset[int], since: int = NOW - WINDOW) -> list[str]:
    return sorted([u async for chunk in store.present_in(cover, since) for u in chunk])


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


def test_a_user_sighted_again_at_the_same_place_writes_its_pointer_once(
    run: Callable[[Body], None],
) -> None:
    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        near = sorted(h3i.grid_disk(cell(AUSTIN), 2))

        async def report() -> None:
            for i in range(50):
                await store.record([Sighting("a", near[i % len(near)], NOW + i * 1000)])

        spent = await costs(client, report)
        assert spent == Counter(set=1, hset=50, pexpireat=1, hdel=0)
        # The pointer lives exactly as long as the hash it names.
        pointer = f"{prefix}:pres:u:{{a}}"
        expiry = (SLOT + 2) * WINDOW
        assert await client.pexpiretime(pointer) == expiry
        assert await client.pexpiretime(hash_key(prefix, AUSTIN)) == expiry
        last = near[49 % len(near)]
        assert await present(store, frozenset({last})) == ["a"]
        assert await present(store, frozenset({near[48 % len(near)]})) == []

    run(body)


@pytest.mark.parametrize("restarted", [False, True], ids=["warm", "restarted"])
def test_a_user_who_moves_is_found_over_the_new_bucket_and_not_the_old_one(
    run: Callable[[Body], None], restarted: bool
) -> None:
    """With the store's memory of the user (warm) and without it (a new store on the same
    keys: the worker restarted, or got the user's partition in a rebalance)."""

    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await store.record([Sighting("a", cell(AUSTIN), NOW), Sighting("b", cell(AUSTIN), NOW)])
        if restarted:
            store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
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


def test_a_worker_that_gets_a_users_partition_back_corrects_what_it_remembered(
    run: Callable[[Body], None],
) -> None:
    """Worker A remembers the user in Austin; the partition goes to worker B, which sees
    the user in Dallas; then it comes back to A, which still remembers Austin."""

    async def body(client: Client, prefix: str) -> None:
        a = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        b = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await a.record([Sighting("u", cell(AUSTIN), NOW), Sighting("v", cell(HOUSTON), NOW)])
        await b.record([Sighting("u", cell(DALLAS), NOW + 1000)])
        # Back at A, in Austin again: A believed the user had never left.
        await a.record([Sighting("u", cell(AUSTIN), NOW + 2000)])
        assert await present(a, bucket_of(AUSTIN)) == ["u"]
        assert await present(a, bucket_of(DALLAS)) == []
        # The hash B emptied (and so deleted) was written anew: it expires again.
        assert await client.pexpiretime(hash_key(prefix, AUSTIN)) == (SLOT + 2) * WINDOW

        # Again to B (Houston), back to A elsewhere (Dallas): A deletes from Houston too.
        await b.record([Sighting("u", cell(HOUSTON), NOW + 3000)])
        await a.record([Sighting("u", cell(DALLAS), NOW + 4000)])
        assert await present(a, bucket_of(DALLAS)) == ["u"]
        assert await present(a, bucket_of(HOUSTON)) == ["v"]
        assert await present(a, bucket_of(AUSTIN)) == []

    run(body)


def test_a_hash_whose_last_user_left_expires_once_written_again(
    run: Callable[[Body], None],
) -> None:
    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        key = hash_key(prefix, AUSTIN)
        await store.record([Sighting("a", cell(AUSTIN), NOW)])
        await store.record([Sighting("a", cell(DALLAS), NOW + 1000)])
        assert await client.exists(key) == 0  # its last user left: Redis deleted it
        await store.record([Sighting("b", cell(AUSTIN), NOW + 2000)])
        assert await client.pexpiretime(key) == (SLOT + 2) * WINDOW

    run(body)


def test_a_failed_write_is_not_remembered(run: Callable[[Body], None]) -> None:
    """A write that Redis fails (here a key of the wrong type where the hash should be)
    raises, and the store does not believe it wrote: the retry writes what is needed."""

    async def body(client: Client, prefix: str) -> None:
        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await store.record([Sighting("a", cell(AUSTIN), NOW)])
        await client.set(hash_key(prefix, DALLAS), "not a hash")
        with pytest.raises(IndexUnavailable):
            await store.record([Sighting("a", cell(DALLAS), NOW + 1000)])
        await client.delete(hash_key(prefix, DALLAS))
        await store.record([Sighting("a", cell(DALLAS), NOW + 1000)])
        assert await present(store, bucket_of(DALLAS)) == ["a"]
        assert await present(store, bucket_of(AUSTIN)) == []

        # A user first sighted by a failed write: the retry writes its pointer.
        await client.set(hash_key(prefix, HOUSTON), "not a hash")
        with pytest.raises(IndexUnavailable):
            await store.record([Sighting("b", cell(HOUSTON), NOW)])
        await client.delete(hash_key(prefix, HOUSTON))

        async def retry() -> None:
            await store.record([Sighting("b", cell(HOUSTON), NOW)])

        assert (await costs(client, retry))["set"] == 1
        assert await client.pexpiretime(hash_key(prefix, HOUSTON)) == (SLOT + 2) * WINDOW

    run(body)


def test_the_store_remembers_the_latest_users_within_known_users(
    run: Callable[[Body], None],
) -> None:
    """A user written recently costs no pointer when sighted again at the same place;
    once ``known_users`` others were written since, it is forgotten (its next sighting
    writes its pointer again); the store holds no more users than the bound, beyond one
    batch's; 0 remembers nothing."""

    async def body(client: Client, prefix: str) -> None:
        here = cell(AUSTIN)

        async def sighted(store: RedisPresenceStore, *users: str, at: int) -> int:
            """How many pointers the sightings of ``users`` wrote."""

            async def write() -> None:
                await store.record([Sighting(u, here, at) for u in users])

            return (await costs(client, write))["set"]

        store = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW, known_users=4)
        assert await sighted(store, "a", at=NOW) == 1
        assert await sighted(store, "b", at=NOW + 1) == 1
        assert await sighted(store, "a", at=NOW + 2) == 0  # one other written since
        for i, other in enumerate("cdef"):
            assert await sighted(store, other, at=NOW + 3 + i) == 1
        assert await sighted(store, "a", at=NOW + 7) == 1  # four others since: forgotten
        assert store.remembered <= 4

        many = [f"m{i}" for i in range(50)]
        assert await sighted(store, *many, at=NOW + 7) == 50
        assert store.remembered <= 4 + len(many)
        assert await sighted(store, *many[:10], at=NOW + 8) == 0

        off = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW, known_users=0)
        assert await sighted(off, "u1", at=NOW + 9) == 1
        assert await sighted(off, "u1", at=NOW + 10) == 1
        assert off.remembered == 0
        assert await present(off, frozenset({here})) == sorted(["a", "b", *"cdef", "u1", *many])

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
        assert spent["set"] <= 4000 + 0.02 * locations * 1.5, spent  # first sightings, moves

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


def test_a_write_that_failed_half_done_is_checked_again_on_the_retry(
    run: Callable[[Body], None],
) -> None:
    """Worker A remembers the user in Austin, where worker B's move to Dallas emptied (and
    so deleted) the hash. A's next batch sees the user in Austin again and fails on another
    key after Redis recreated the Austin hash: the retry still finds the hash without its
    expiry and the user still in Dallas, and mends both."""

    async def body(client: Client, prefix: str) -> None:
        a = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        b = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        await a.record([Sighting("u", cell(AUSTIN), NOW)])
        await b.record([Sighting("u", cell(DALLAS), NOW + 1000)])
        await client.set(hash_key(prefix, HOUSTON), "not a hash")
        batch = [Sighting("u", cell(AUSTIN), NOW + 2000), Sighting("v", cell(HOUSTON), NOW)]
        with pytest.raises(IndexUnavailable):
            await a.record(batch)
        await client.delete(hash_key(prefix, HOUSTON))
        await a.record(batch)
        assert await client.pexpiretime(hash_key(prefix, AUSTIN)) == (SLOT + 2) * WINDOW
        assert await present(a, bucket_of(AUSTIN)) == ["u"]
        assert await present(a, bucket_of(DALLAS)) == []
        assert await present(a, bucket_of(HOUSTON)) == ["v"]

    run(body)

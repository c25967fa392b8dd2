"""One contract, two implementations: the Redis dedup store and its in-process twin. Every
test runs against the twin, the real server and a real Redis Cluster (where every key must
work unchanged)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipeline.adapters.memory.dedup import MemoryDedupStore
from pipeline.adapters.redis.dedup import RedisDedupStore

# body(dedup, sibling): sibling() is another worker's store over the same records.
Body = Callable[[Any, Callable[[], Any]], Awaitable[None]]
Runner = Callable[[Body], None]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def run(request: pytest.FixtureRequest, connect: Callable[[str], Any]) -> Runner:
    """Runs ``body(dedup)`` on a fresh event loop against one implementation."""

    def runner(body: Body) -> None:
        async def main() -> None:
            if request.param == "memory":
                one = MemoryDedupStore()  # in process, one store is every worker's
                await body(one, lambda: one)
                return
            client = connect(request.param)
            prefix = f"ct{uuid.uuid4().hex[:8]}"
            try:
                await body(
                    RedisDedupStore(client, prefix=prefix),
                    lambda: RedisDedupStore(client, prefix=prefix),
                )
            finally:
                await client.aclose()

        asyncio.run(main())

    return runner


FAR = 4_102_444_800_000  # 2100-01-01


def test_dedup_remembers_pairs_independently(run: Runner) -> None:
    async def body(dedup: Any, sibling: Callable[[], Any]) -> None:
        pairs = [("s|a1", "u1"), ("s|a1", "u2"), ("s|a2", "u1")]
        assert await dedup.unseen(pairs, [0, 0, 0]) == [True, True, True]
        assert await dedup.mark_seen([("s|a1", "u1")], [0], [FAR]) == 1
        assert await dedup.unseen(pairs, [0, 0, 0]) == [False, True, True]

    run(body)


def test_dedup_answers_in_order_and_counts_across_alerts_partitions_and_large_batches(
    run: Runner,
) -> None:
    async def body(dedup: Any, sibling: Callable[[], Any]) -> None:
        many = [("s|big", f"u{i}") for i in range(25_000)]  # more than one command's worth
        parts = [i % 4 for i in range(25_000)]  # a user's partition never changes
        assert await dedup.mark_seen(many[::3], parts[::3], [FAR] * len(many[::3])) == len(
            many[::3]
        )
        assert await dedup.mark_seen([("s|other", "u1")], [1], [FAR]) == 1
        assert await dedup.mark_seen(many[:7], parts[:7], [FAR] * 7) == 4  # u0, u3, u6 were
        mixed = [("s|other", "u1"), *many, ("s|other", "u2"), ("s|none", "u0")]
        expected = [False] + [i % 3 != 0 and i >= 7 for i in range(25_000)] + [True, True]
        assert await dedup.unseen(mixed, [1, *parts, 2, 0]) == expected
        assert await dedup.unseen(many[6:10], parts[6:10]) == [False, True, True, False]
        assert await dedup.unseen([], []) == []
        # Counted once, however often and in whatever company a pair is recorded again.
        assert await dedup.mark_seen(many[:12], parts[:12], [FAR] * 12) == 4  # u7 .. u11 - u9

    run(body)


def test_a_record_is_seen_by_the_next_owner_of_its_partition(run: Runner) -> None:
    """Worker A cards users of partition 3, then loses it; worker B, which owned it
    before and held its record, gains it back: B must see A's cards, not its old view."""

    async def body(first: Any, sibling: Callable[[], Any]) -> None:
        second = sibling()
        second.own(frozenset({3}))
        assert await second.unseen([("s|a", "u1")], [3]) == [True]  # B holds partition 3
        second.own(frozenset())  # ... and loses it to A
        first.own(frozenset({3}))
        assert await first.mark_seen([("s|a", "u1"), ("s|a", "u2")], [3, 3], [FAR, FAR]) == 2
        first.own(frozenset())
        second.own(frozenset({3}))  # B gains it back
        assert await second.unseen([("s|a", "u1"), ("s|a", "u3")], [3, 3]) == [False, True]
        assert await second.mark_seen([("s|a", "u2"), ("s|a", "u3")], [3, 3], [FAR, FAR]) == 1

    run(body)


def test_a_card_recorded_with_its_digest_is_seen_by_a_check_without_one(run: Runner) -> None:
    """A fan-out records its cards with the digests it hashed for their event ids; a
    location batch, a sibling worker or an older caller checking the same pairs without
    them must see the same records, and the other way round."""

    async def body(dedup: Any, sibling: Callable[[], Any]) -> None:
        users = [f"u{i}" for i in range(50)]
        pairs = [("s|d", u) for u in users]
        digests = [
            hashlib.sha256(f"s|d\x1f{u}".encode()).digest() for u in users
        ]  # the card's event_id hash, computed here as consumers would
        assert await dedup.mark_seen(pairs[:25], [4] * 25, [FAR] * 25, digests[:25]) == 25
        other = sibling()
        other.own(frozenset({4}))
        assert await other.unseen(pairs, [4] * 50) == [False] * 25 + [True] * 25
        assert await other.mark_seen(pairs[20:30], [4] * 10, [FAR] * 10) == 5
        dedup.own(frozenset())  # partition 4 went to the sibling, and now comes back
        dedup.own(frozenset({4}))
        assert await dedup.unseen(pairs[:40], [4] * 40, digests[:40]) == [False] * 30 + [True] * 10

    run(body)


def test_finished_fan_outs_are_recorded_per_version_and_partition(run: Runner) -> None:
    async def body(dedup: Any, sibling: Callable[[], Any]) -> None:
        assert await dedup.fanned_out("s|a", 100) == frozenset()
        await dedup.mark_fanned_out("s|a", 100, [0, 2], FAR)
        await dedup.mark_fanned_out("s|a", 100, [2, 5], FAR)
        await dedup.mark_fanned_out("s|a", 200, [1], FAR)
        await dedup.mark_fanned_out("s|b", 100, [7], FAR)
        assert await dedup.fanned_out("s|a", 100) == frozenset({0, 2, 5})
        assert await dedup.fanned_out("s|a", 200) == frozenset({1})
        assert await sibling().fanned_out("s|b", 100) == frozenset({7})

    run(body)

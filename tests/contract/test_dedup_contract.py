"""One contract, two implementations: the Redis dedup store and its in-process twin. Every
test runs against the twin, the real server and a real Redis Cluster (where every key must
work unchanged)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipeline.adapters.memory.dedup import MemoryDedupStore
from pipeline.adapters.redis.dedup import RedisDedupStore

Body = Callable[[Any], Awaitable[None]]
Runner = Callable[[Body], None]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def run(request: pytest.FixtureRequest, connect: Callable[[str], Any]) -> Runner:
    """Runs ``body(dedup)`` on a fresh event loop against one implementation."""

    def runner(body: Body) -> None:
        async def main() -> None:
            if request.param == "memory":
                await body(MemoryDedupStore())
                return
            client = connect(request.param)
            try:
                await body(RedisDedupStore(client, prefix=f"ct{uuid.uuid4().hex[:8]}"))
            finally:
                await client.aclose()

        asyncio.run(main())

    return runner


def test_dedup_remembers_pairs_independently(run: Runner) -> None:
    async def body(dedup: Any) -> None:
        pairs = [("s|a1", "u1"), ("s|a1", "u2"), ("s|a2", "u1")]
        assert await dedup.unseen(pairs) == [True, True, True]
        far = 4_102_444_800_000  # 2100-01-01
        await dedup.mark_seen([("s|a1", "u1")], [far])
        assert await dedup.unseen(pairs) == [False, True, True]

    run(body)


def test_dedup_answers_in_order_and_counts_across_alerts_and_large_batches(run: Runner) -> None:
    async def body(dedup: Any) -> None:
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

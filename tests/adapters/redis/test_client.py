"""What the Redis adapters share (pipeline/adapters/redis/client.py): bulk() runs many
commands in one round trip on the real Redis, and no half-read connection ever goes back
to the pool; every adapter translates a Redis failure the same way."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable

import h3.api.basic_int as h3i
import pytest
from redis import exceptions as redis_errors

from pipeline.adapters.redis.client import bulk, redis_client
from pipeline.adapters.redis.dedup import RedisDedupStore
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.adapters.redis.reach import RedisReachStore
from pipeline.domain.models import Sighting
from pipeline.errors import IndexUnavailable
from tests.support.services import Services


@pytest.mark.integration
def test_replies_come_back_in_order_and_an_error_reply_leaves_no_dirty_connection(
    services: Services,
) -> None:
    key = f"bulk-{uuid.uuid4().hex}"

    async def body() -> None:
        client = redis_client(services.redis_url, password=None, socket_timeout_s=5)
        try:
            commands = [("SADD", f"{key}:{i % 7}", f"m{i}") for i in range(30_000)]
            replies = await bulk(client, commands)
            assert replies == [1] * 30_000
            sizes = await bulk(client, [("SCARD", f"{key}:{i}") for i in range(7)])
            assert sum(sizes) == 30_000
            # An error reply in the middle: raised, and the rest of the replies are not
            # left for the next caller of that connection to read as its own.
            with pytest.raises(redis_errors.ResponseError):
                await bulk(client, [("SET", key, "x"), ("INCR", key), ("GET", key)])
            for _ in range(3):
                assert await bulk(client, [("GET", key), ("SCARD", f"{key}:0")]) == [
                    b"x",
                    sizes[0],
                ]
            assert await client.get(key) == b"x"  # the ordinary client path still works
            await bulk(client, [("DEL", key), *(("DEL", f"{key}:{i}") for i in range(7))])
        finally:
            await client.aclose()

    asyncio.run(body())


def test_every_redis_adapter_reports_an_unreachable_redis_as_index_unavailable() -> None:
    """One error translation for all of them (``guard``): the runtime retries an
    IndexUnavailable as "Redis down" and counts it, whichever store raised it."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"

    async def body() -> list[str]:
        client = redis_client(url, password=None, socket_timeout_s=1)
        stores: list[Callable[[], Awaitable[object]]] = [
            lambda: RedisCellIndex(client, prefix="x", resolution=10).is_built(),
            lambda: RedisDedupStore(client, prefix="x").unseen([("s|A1", "u1")], [0]),
            lambda: RedisPresenceStore(client, prefix="x", window_ms=60_000).record(
                [Sighting("u1", h3i.latlng_to_cell(30.27, -97.74, 10), 1)]
            ),
            lambda: RedisReachStore(client, prefix="x").issued_at("s|A1"),
        ]
        reasons = []
        try:
            for call in stores:
                with pytest.raises(IndexUnavailable) as raised:
                    await call()
                reasons.append(str(raised.value))
        finally:
            await client.aclose()
        return reasons

    reasons = asyncio.run(body())
    assert all(r.startswith("redis unreachable during ") for r in reasons), reasons

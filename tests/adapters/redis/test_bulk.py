"""bulk(): many commands in one round trip on the real Redis, and no half-read connection
ever goes back to the pool."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis import exceptions as redis_errors

from pipeline.adapters.redis.index import bulk, redis_client
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

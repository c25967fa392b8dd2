"""What every Redis adapter shares: the client factory, error translation and ``bulk()``.

* :func:`redis_client` builds the asyncio client: on a single server a
  :class:`BulkRedis` (redis-py's client, plus the raw connections ``bulk()`` writes to),
  or a Redis Cluster client.
* :func:`guard` runs one Redis call and translates the client's errors into
  :class:`~pipeline.errors.IndexUnavailable` (an infrastructure failure: retried, never
  dropped), the one place that does so for every Redis adapter.
* :func:`bulk` sends many small commands in one round trip, for the hot paths: on a single
  server over its own connections (:mod:`pipeline.adapters.redis.wire`: hiredis packs the
  commands and parses the replies), on a cluster through redis-py's cluster pipeline.

Only public API of redis-py and hiredis is used: the wire reads where to connect from the
client's ``connection_pool.connection_class`` and ``connection_kwargs``, and
:class:`BulkRedis` only adds to redis-py's client (its ``aclose()`` closes the wire too).
Every other command goes through redis-py as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from pipeline.adapters.redis.wire import BulkWire
from pipeline.errors import IndexUnavailable

T = TypeVar("T")
RedisClient: TypeAlias = Redis | RedisCluster
# An alert's keys (record, cover, seen set) are kept this long past the alert's expiry, so
# that late events still see it expired rather than unknown.
ALERT_KEYS_GRACE_MS = 3600 * 1000


async def guard(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call, translating client errors into IndexUnavailable (``what`` names
    the operation in the error's text)."""
    try:
        return await call()
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise IndexUnavailable(f"redis unreachable during {what}: {exc}") from exc
    except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
        raise IndexUnavailable(f"redis error during {what}: {exc}") from exc


class BulkRedis(Redis):
    """redis-py's asyncio client for one server, every command as redis-py runs it, plus
    :attr:`wire`: the pool of raw connections :func:`bulk` writes to, made from the same
    connection settings. Its ``aclose()`` closes the wire's connections too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire = BulkWire(self.connection_pool)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await self.wire.aclose()


async def bulk(client: RedisClient, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` (``("SADD", key, member)``, ...) in one round trip and return their
    raw replies, for bulk work of many small commands (a redis-py pipeline costs about
    16 µs a command, this about 1).

    On a single server, over one of the client's wire connections
    (:mod:`pipeline.adapters.redis.wire`): hiredis-packed into a single write, replies
    parsed by hiredis in RESP3 types (``HGETALL`` a dict; with a ``protocol=2`` client,
    RESP2's flat field/value list), one deadline of the client's socket timeout per 10,000
    commands. An error reply raises (the first one, once every reply is read); a timeout or
    a broken connection raises redis-py's TimeoutError or ConnectionError and closes the
    connection, so no half-read replies go back to the pool. A plain ``Redis`` client, not
    a :class:`BulkRedis`, gets a connection of its own for the call.

    On Redis Cluster, a cluster pipeline instead: every command names one key; its replies
    pass redis-py's callbacks, which give the same values in other types, such as bools for
    SMISMEMBER's 0/1."""
    if not commands:
        return []
    if isinstance(client, RedisCluster):  # its pipeline splits the commands by node
        async with client.pipeline() as pipe:
            for command in commands:
                # Without the option Redis.set(get=True) passes, the SET callback turns
                # the old value a SET ... GET returns into a bool.
                get = command[0] == "SET" and "GET" in command[3:]
                pipe.execute_command(*command, **({"get": True} if get else {}))
            return list(await pipe.execute())
    if isinstance(client, BulkRedis):
        return await client.wire.execute(commands)
    wire = BulkWire(client.connection_pool, max_idle=0)
    try:
        return await wire.execute(commands)
    finally:
        await wire.aclose()


def redis_client(
    url: str, *, password: str | None, socket_timeout_s: float, cluster: bool = False
) -> RedisClient:
    """An asyncio Redis client for ``url`` (``redis://[user:password@]host:port/db``,
    ``rediss://...`` or ``unix:///path?db=N``; ``password`` is used when the URL has
    none): a :class:`BulkRedis`, whose commands and :func:`bulk` connections both
    authenticate and select the db as the URL says. With ``cluster``, a Redis Cluster
    client seeded from ``url`` (every key the adapters use names one slot)."""
    if cluster:
        return RedisCluster.from_url(
            url,
            password=password,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
    return BulkRedis.from_url(
        url,
        password=password,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        health_check_interval=30,
    )

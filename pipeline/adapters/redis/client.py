"""What every Redis adapter shares: the client factory, error translation and ``bulk()``.

* :func:`redis_client` builds the asyncio client (single server or Redis Cluster).
* :func:`guard` runs one Redis call and translates the client's errors into
  :class:`~pipeline.errors.IndexUnavailable` (an infrastructure failure: retried, never
  dropped), the one place that does so for every Redis adapter.
* :func:`bulk` sends many small commands in one round trip, for the hot paths.

Two shortcuts here reach into redis-py's internals on the hot path: :func:`_reply_reader`
reads replies straight from a connection's private ``_parser``, and :func:`redis_client`
swaps the pool's ``connection_class`` for one that packs commands with hiredis. They are
kept here, in one module, until a later issue replaces them with public API (or a client
that offers it); nothing else may depend on them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)

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


async def bulk(client: RedisClient, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` (``("SADD", key, member)``, ...) in one round trip and return their
    raw replies: hiredis-packed into a single write, replies read without redis-py's
    per-reply timeout and callbacks (``HGETALL`` gives a dict under RESP3, the default,
    and a flat field/value list under RESP2). For bulk
    work of many small commands, where a redis-py pipeline costs about 16 µs a command.

    One connection, one deadline of the client's socket timeout per 10,000 commands (on
    Redis Cluster, a cluster pipeline instead: every command names one key; its replies
    pass redis-py's callbacks, which give the same values in other types, such as bools
    for SMISMEMBER's 0/1). A reply error, timeout or broken connection raises (as redis-py
    errors) and closes the connection, so no half-read replies go back to the pool."""
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
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        payload = b"".join([hiredis.pack_command(c) for c in commands])
        read = _reply_reader(conn)
        timeout = (conn.socket_timeout or 30.0) * (1 + len(commands) // 10_000)
        try:
            async with asyncio.timeout(timeout):
                await conn.send_packed_command(payload)
                return [await read() for _ in commands]
        except TimeoutError as exc:
            raise redis_errors.TimeoutError(f"no reply within {timeout:.0f}s") from exc
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


def _reply_reader(conn: AbstractConnection) -> Callable[[], Awaitable[Any]]:
    """Reads one reply. Straight from the connection's hiredis parser when it has one
    (half the cost of ``read_response``, which re-arms timeouts and health checks per
    reply); an error reply raises either way.

    Reads redis-py's private ``_parser``: only moved here as it was; a later issue replaces
    it (see the module docstring)."""
    parser = getattr(conn, "_parser", None)
    if parser is None or not hasattr(parser, "read_response"):
        return lambda: conn.read_response(timeout=math.inf)

    async def read() -> Any:
        reply = await parser.read_response()
        if isinstance(reply, redis_errors.ResponseError):
            raise reply
        return reply

    return read


class _HiredisPacking:
    """Packs commands with hiredis's C packer. redis-py's asyncio connection packs every
    argument in Python (about 2.5 µs each), which dominated a fan-out that checks and
    records a million users in SMISMEMBER/SADD commands of 10,000 members."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
        packed = tuple(bytes(a) if isinstance(a, bytearray) else a for a in args)
        try:
            return [hiredis.pack_command(packed)]  # type: ignore[arg-type]
        except TypeError as exc:
            raise redis_errors.DataError(str(exc)) from exc


class _PackingConnection(_HiredisPacking, Connection):
    pass


class _PackingSSLConnection(_HiredisPacking, SSLConnection):
    pass


class _PackingUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _PackingConnection,
    SSLConnection: _PackingSSLConnection,
    UnixDomainSocketConnection: _PackingUnixConnection,
}


def redis_client(
    url: str, *, password: str | None, socket_timeout_s: float, cluster: bool = False
) -> RedisClient:
    """An asyncio Redis client for ``url`` (``redis://``, ``rediss://`` or ``unix://``):
    hiredis parses the replies and packs the commands. With ``cluster``, a Redis Cluster
    client seeded from ``url`` (every key the adapters use names one slot)."""
    if cluster:
        return RedisCluster.from_url(
            url,
            password=password,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
    client = Redis.from_url(
        url,
        password=password,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        health_check_interval=30,
    )
    pool = client.connection_pool
    # Swaps redis-py's connection class for the hiredis-packing one: only moved here as it
    # was; a later issue replaces it (see the module docstring).
    pool.connection_class = _PACKING.get(pool.connection_class, pool.connection_class)
    return client

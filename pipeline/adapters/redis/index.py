"""The cell index and the dedup store on Redis, with keys that work unchanged on Redis Cluster.

Key layout (``p`` is the configured prefix, ``K`` an alert key ``sender|identifier``):

    p:alert:{K}          the installed ActiveAlert (JSON), version included; PXAT its expiry
    p:cover:{K}:V        the compact cover of version V, packed little-endian uint64 cells
    p:cell:<cell hex>    SET of "V|K" members: alert K version V covers this cell
    p:alerts             SET of installed alert keys
    p:tomb:{K}           version of the Cancel of K; expires when K could no longer matter
    p:built              present once the index holds the whole alerts topic (rebuild marker)
    p:seen:{K}           SET of users who got K's card; PXAT the latest card's expiry

Every command names one key, so nothing is cross-slot; multi-key work is pipelined, which a
cluster client splits by node. The ``{K}`` hash tags keep an alert's own keys in one slot.

Versioned writes: the members of a new version are added before the alert's record flips
to that version, and the old version's members are removed after. A reader accepts a
member only when its version equals the record's, so it sees the old cover or the new one,
never a mixture; with no record (cancelled or expired) it sees nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any, TypeVar

import h3.api.basic_int as h3i
import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)

from pipeline.domain.targeting.cards import ActiveAlert
from pipeline.errors import IndexNotBuilt, IndexUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
_CHUNK = 10_000
# Keep an alert's record a little past its expiry so late events still see "expired".
_GRACE_MS = 3600 * 1000


def _pack(cells: Iterable[int]) -> bytes:
    cells = sorted(cells)
    return struct.pack(f"<{len(cells)}Q", *cells)


def _unpack(blob: bytes | str) -> list[int]:
    data = blob.encode("latin-1") if isinstance(blob, str) else blob
    return list(struct.unpack(f"<{len(data) // 8}Q", data))


def _bytes(value: bytes | str) -> bytes:
    # The client is built without decode_responses, so replies are bytes; typed as either.
    return value.encode() if isinstance(value, str) else value


async def _guard(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call, translating client errors into IndexUnavailable."""
    try:
        return await call()
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise IndexUnavailable(f"redis unreachable during {what}: {exc}") from exc
    except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
        raise IndexUnavailable(f"redis error during {what}: {exc}") from exc


async def bulk(client: Redis | RedisCluster, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
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
    reply); an error reply raises either way."""
    parser = getattr(conn, "_parser", None)
    if parser is None or not hasattr(parser, "read_response"):
        return lambda: conn.read_response(timeout=math.inf)

    async def read() -> Any:
        reply = await parser.read_response()
        if isinstance(reply, redis_errors.ResponseError):
            raise reply
        return reply

    return read


class RedisCellIndex:
    """:class:`pipeline.domain.ports.CellIndex` on Redis."""

    def __init__(self, client: Redis | RedisCluster, *, prefix: str, resolution: int) -> None:
        self._r = client
        self._p = prefix
        self._resolution = resolution

    # -- keys ------------------------------------------------------------------------------
    def _alert_key(self, key: str) -> str:
        return f"{self._p}:alert:{{{key}}}"

    def _cover_key(self, key: str, version: int) -> str:
        return f"{self._p}:cover:{{{key}}}:{version}"

    def _cell_key(self, cell: int) -> str:
        return f"{self._p}:cell:{cell:x}"

    @property
    def _registry(self) -> str:
        return f"{self._p}:alerts"

    @property
    def _built(self) -> str:
        return f"{self._p}:built"

    def _tomb_key(self, key: str) -> str:
        return f"{self._p}:tomb:{{{key}}}"

    # -- writes ----------------------------------------------------------------------------
    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        too_fine = [c for c in cells if h3i.get_resolution(c) > self._resolution]
        if too_fine:
            raise ValueError(f"cover has cells finer than the index resolution {self._resolution}")
        old = await self.get_alert(alert.key)
        member = f"{alert.version}|{alert.key}".encode()
        await self._sadd_all(cells, member)
        expires = alert.expires_ms + _GRACE_MS if alert.expires_ms is not None else None

        async def flip() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.set(self._cover_key(alert.key, alert.version), _pack(cells), pxat=expires)
                pipe.set(self._alert_key(alert.key), alert.to_bytes(), pxat=expires)
                pipe.sadd(self._registry, alert.key)
                await pipe.execute()

        await _guard("put_alert", flip)
        if old is not None and old.version != alert.version:
            await self._drop_version(old.key, old.version)

    async def remove_alert(self, key: str) -> bool:
        old = await self.get_alert(key)

        async def unflip() -> int:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.delete(self._alert_key(key))
                pipe.srem(self._registry, key)
                deleted, _ = await pipe.execute()
                return int(deleted)

        removed = await _guard("remove_alert", unflip)
        if old is not None:
            await self._drop_version(key, old.version)
        return removed == 1

    async def tombstone(self, key: str, version: int, keep_until_ms: int) -> None:
        async def write() -> None:
            current = await self._r.get(self._tomb_key(key))
            if current is None or int(current) < version:
                await self._r.set(self._tomb_key(key), str(version), pxat=keep_until_ms)

        await _guard("tombstone", write)

    async def cancelled_version(self, key: str) -> int | None:
        raw = await _guard("tombstone read", lambda: self._r.get(self._tomb_key(key)))
        return int(raw) if raw is not None else None

    async def mark_built(self) -> None:
        await _guard("mark built", lambda: self._r.set(self._built, b"1"))

    async def is_built(self) -> bool:
        return bool(await _guard("built check", lambda: self._r.exists(self._built)))

    async def _sadd_all(self, cells: Iterable[int], member: bytes) -> None:
        cell_list = list(cells)
        for start in range(0, len(cell_list), _CHUNK):
            chunk = cell_list[start : start + _CHUNK]

            commands = [("SADD", self._cell_key(cell), member) for cell in chunk]
            await _guard("cover write", lambda c=commands: bulk(self._r, c))  # type: ignore[misc]

    async def _drop_version(self, key: str, version: int) -> None:
        cover_key = self._cover_key(key, version)
        blob = await _guard("cover read", lambda: self._r.get(cover_key))
        if blob:
            member = f"{version}|{key}".encode()
            cells = _unpack(blob)
            for start in range(0, len(cells), _CHUNK):
                chunk = cells[start : start + _CHUNK]

                commands = [("SREM", self._cell_key(cell), member) for cell in chunk]
                await _guard("cover cleanup", lambda c=commands: bulk(self._r, c))  # type: ignore[misc]
        await _guard("cover cleanup", lambda: self._r.delete(cover_key))

    # -- reads -----------------------------------------------------------------------------
    async def get_alert(self, key: str) -> ActiveAlert | None:
        raw = await _guard("get_alert", lambda: self._r.get(self._alert_key(key)))
        return ActiveAlert.from_bytes(_bytes(raw)) if raw else None

    async def active_alerts(self) -> list[ActiveAlert]:
        keys = await _guard("active_alerts", lambda: self._r.smembers(self._registry))
        alerts = await self._records(sorted(_bytes(k).decode() for k in keys))
        return [a for a in alerts.values() if a is not None]

    async def cover_of(self, key: str) -> frozenset[int] | None:
        """The installed compact cover of ``key`` (for tools and checks)."""
        alert = await self.get_alert(key)
        if alert is None:
            return None
        blob = await _guard("cover read", lambda: self._r.get(self._cover_key(key, alert.version)))
        return frozenset(_unpack(blob)) if blob else frozenset()

    async def alerts_at(self, cells: Sequence[int]) -> list[list[ActiveAlert]]:
        res = self._resolution
        lookups: list[list[int]] = []
        unique: dict[int, int] = {}
        for cell in cells:
            chain = [h3i.cell_to_parent(cell, r) for r in range(res)]
            chain.append(cell)
            lookups.append(chain)
            for c in chain:
                unique.setdefault(c, len(unique))
        order = list(unique)

        commands = [("EXISTS", self._built)]
        commands.extend(("SMEMBERS", self._cell_key(c)) for c in order)
        built, *members = await _guard("alerts_at", lambda: bulk(self._r, commands))
        if not built:
            raise IndexNotBuilt("the index has no rebuild marker (empty, flushed or failed over)")
        found: dict[int, list[tuple[int, str]]] = {}
        keys: set[str] = set()
        for c, mset in zip(order, members, strict=True):
            if mset:
                parsed = []
                for m in mset:
                    version, _, key = m.decode().partition("|")
                    parsed.append((int(version), key))
                    keys.add(key)
                found[c] = parsed
        if not keys:
            return [[] for _ in cells]
        records = await self._records(sorted(keys))
        out: list[list[ActiveAlert]] = []
        for chain in lookups:
            hits: dict[str, ActiveAlert] = {}
            for c in chain:
                for version, key in found.get(c, ()):
                    record = records.get(key)
                    if record is not None and record.version == version:
                        hits[key] = record
            out.append(list(hits.values()))
        return out

    async def _records(self, keys: Sequence[str]) -> dict[str, ActiveAlert | None]:
        async def read() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(self._alert_key(key))
                return list(await pipe.execute())

        raws = await _guard("alert records", read)
        return {
            k: ActiveAlert.from_bytes(r) if r else None for k, r in zip(keys, raws, strict=True)
        }


class RedisDedupStore:
    """:class:`pipeline.domain.ports.DedupStore` on Redis: one set of user ids per alert,
    ``p:seen:{K}``, checked with SMISMEMBER and filled with SADD, a chunk of users per
    command. The set expires (PEXPIREAT, only ever pushed later) with the alert's cards."""

    def __init__(self, client: Redis | RedisCluster, *, prefix: str) -> None:
        self._r = client
        self._p = prefix

    def _key(self, alert_key: str) -> str:
        return f"{self._p}:seen:{{{alert_key}}}"

    async def unseen(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        groups = _by_alert(pairs)
        commands = [
            ("SMISMEMBER", self._key(alert_key), *users[s : s + _CHUNK])
            for alert_key, (_, users) in groups.items()
            for s in range(0, len(users), _CHUNK)
        ]
        replies = iter(await _guard("dedup read", lambda: bulk(self._r, commands)))
        if len(groups) == 1:  # a fan-out chunk, or a batch that hit one alert
            return [not found for reply in replies for found in reply]
        fresh = [True] * len(pairs)
        for positions, users in groups.values():
            found = [f for _ in range(0, len(users), _CHUNK) for f in next(replies)]
            for i, member in zip(positions, found, strict=True):
                fresh[i] = not member
        return fresh

    async def mark_seen(
        self, pairs: Sequence[tuple[str, str]], expires_at_ms: Sequence[int]
    ) -> int:
        groups = _by_alert(pairs)
        commands: list[tuple[Any, ...]] = []
        adds: list[int] = []
        for alert_key, (positions, users) in groups.items():
            key = self._key(alert_key)
            for s in range(0, len(users), _CHUNK):
                adds.append(len(commands))
                commands.append(("SADD", key, *users[s : s + _CHUNK]))
            until = _GRACE_MS + (
                max(expires_at_ms) if len(groups) == 1 else max(expires_at_ms[i] for i in positions)
            )
            commands.append(("PEXPIREAT", key, until, "NX"))
            commands.append(("PEXPIREAT", key, until, "GT"))
        replies = await _guard("dedup write", lambda: bulk(self._r, commands))
        return sum(int(replies[i]) for i in adds)

    async def cards_of(self, alert_key: str) -> int:
        return int(await _guard("dedup read", lambda: self._r.scard(self._key(alert_key))))


def _by_alert(pairs: Sequence[tuple[str, str]]) -> dict[str, tuple[Sequence[int], list[str]]]:
    """``alert_key -> (positions in pairs, user ids)``; one alert (the common case) in C."""
    if not pairs:
        return {}
    first = pairs[0][0]
    if all(k == first for k, _ in pairs):
        return {first: (range(len(pairs)), list(map(itemgetter(1), pairs)))}
    groups: dict[str, tuple[list[int], list[str]]] = {}
    for i, (alert_key, user_id) in enumerate(pairs):
        positions, users = groups.setdefault(alert_key, ([], []))
        positions.append(i)
        users.append(user_id)
    return dict(groups)


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
) -> Redis | RedisCluster:
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
    pool.connection_class = _PACKING.get(pool.connection_class, pool.connection_class)
    return client

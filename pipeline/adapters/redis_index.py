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

import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import h3.api.basic_int as h3i
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from pipeline.domain.cards import ActiveAlert
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
    except redis_errors.RedisError as exc:
        raise IndexUnavailable(f"redis error during {what}: {exc}") from exc


class RedisCellIndex:
    """:class:`pipeline.domain.ports.CellIndex` on Redis."""

    def __init__(self, client: Redis, *, prefix: str, resolution: int) -> None:
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

            async def write(chunk: list[int] = chunk) -> None:
                async with self._r.pipeline(transaction=False) as pipe:
                    for cell in chunk:
                        pipe.sadd(self._cell_key(cell), member)
                    await pipe.execute()

            await _guard("cover write", write)

    async def _drop_version(self, key: str, version: int) -> None:
        cover_key = self._cover_key(key, version)
        blob = await _guard("cover read", lambda: self._r.get(cover_key))
        if blob:
            member = f"{version}|{key}".encode()
            cells = _unpack(blob)
            for start in range(0, len(cells), _CHUNK):
                chunk = cells[start : start + _CHUNK]

                async def remove(chunk: list[int] = chunk) -> None:
                    async with self._r.pipeline(transaction=False) as pipe:
                        for cell in chunk:
                            pipe.srem(self._cell_key(cell), member)
                        await pipe.execute()

                await _guard("cover cleanup", remove)
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

        async def read_cells() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.exists(self._built)
                for c in order:
                    pipe.smembers(self._cell_key(c))
                return list(await pipe.execute())

        built, *members = await _guard("alerts_at", read_cells)
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

    def __init__(self, client: Redis, *, prefix: str) -> None:
        self._r = client
        self._p = prefix

    def _key(self, alert_key: str) -> str:
        return f"{self._p}:seen:{{{alert_key}}}"

    async def unseen(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        by_alert: dict[str, list[int]] = {}
        for i, (alert_key, _) in enumerate(pairs):
            by_alert.setdefault(alert_key, []).append(i)
        order = [
            (k, idx[s : s + _CHUNK])
            for k, idx in by_alert.items()
            for s in range(0, len(idx), _CHUNK)
        ]

        async def read() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for alert_key, idx in order:
                    pipe.smismember(self._key(alert_key), [pairs[i][1] for i in idx])
                return list(await pipe.execute())

        fresh = [True] * len(pairs)
        for (_, idx), found in zip(order, await _guard("dedup read", read), strict=True):
            for i, member in zip(idx, found, strict=True):
                fresh[i] = not member
        return fresh

    async def any_seen(self, alert_key: str) -> bool:
        return bool(await _guard("dedup read", lambda: self._r.exists(self._key(alert_key))))

    async def mark_seen(
        self, pairs: Sequence[tuple[str, str]], expires_at_ms: Sequence[int]
    ) -> None:
        users: dict[str, list[str]] = {}
        until: dict[str, int] = {}
        for (alert_key, user_id), expiry in zip(pairs, expires_at_ms, strict=True):
            users.setdefault(alert_key, []).append(user_id)
            until[alert_key] = max(until.get(alert_key, 0), expiry)

        async def write() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                for alert_key, members in users.items():
                    key = self._key(alert_key)
                    for start in range(0, len(members), _CHUNK):
                        pipe.sadd(key, *members[start : start + _CHUNK])
                    pipe.pexpireat(key, until[alert_key] + _GRACE_MS, nx=True)
                    pipe.pexpireat(key, until[alert_key] + _GRACE_MS, gt=True)
                await pipe.execute()

        await _guard("dedup write", write)


def redis_client(url: str, *, password: str | None, socket_timeout_s: float) -> Redis:
    """An asyncio Redis client for ``url`` (hiredis parser when installed)."""
    return Redis.from_url(
        url,
        password=password,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        health_check_interval=30,
    )

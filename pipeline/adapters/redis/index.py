"""The cell index on Redis, with keys that work unchanged on Redis Cluster.

Key layout (``p`` is the configured prefix, ``K`` an alert key ``sender|identifier``):

    p:alert:{K}          the installed ActiveAlert (JSON), version included; PXAT its expiry
    p:cover:{K}:V        the compact cover of version V, packed little-endian uint64 cells
    p:cell:<cell hex>    SET of "V|K" members: alert K version V covers this cell
    p:alerts             SET of installed alert keys
    p:tomb:{K}           version of the Cancel of K; expires when K could no longer matter
    p:owed:{K}           "V|<lifecycle event JSON>": the event of version V not yet announced
    p:built              present once the index holds the whole alerts topic (rebuild marker);
                         its value is a token new with every rebuild
    p:version            counter INCR'd by every put_alert and remove_alert once its change
                         is visible (record flipped or removed): replicas of the index
                         (:mod:`pipeline.adapters.redis.replica`) reload when it moves

Every command names one key, so nothing is cross-slot; multi-key work is pipelined, which a
cluster client splits by node. The ``{K}`` hash tags keep an alert's own keys in one slot
(its seen set, :mod:`pipeline.adapters.redis.dedup`, and reach hash,
:mod:`pipeline.adapters.redis.reach`, too).

Versioned writes: the members of a new version are added before the alert's record flips
to that version, and the old version's members are removed after. A reader accepts a
member only when its version equals the record's, so it sees the old cover or the new one,
never a mixture; with no record (cancelled or expired) it sees nothing.

Replicas: :meth:`RedisCellIndex.index_version` reads the rebuild token and the version
counter in one round trip, and :meth:`RedisCellIndex.changes_since` what differs from a
replica's alerts. The counter is bumped in a round trip of its own after the change's
(on a cluster the change's commands run on several nodes at once), so whoever reads the
new count then reads the changed records.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h3.api.basic_int as h3i

from pipeline.adapters.redis.client import ALERT_KEYS_GRACE_MS, RedisClient, bulk, guard
from pipeline.domain.targeting.cards import ActiveAlert
from pipeline.errors import IndexNotBuilt

_CHUNK = 10_000  # commands per bulk() round trip when a cover is written or dropped


def _pack(cells: Iterable[int]) -> bytes:
    cells = sorted(cells)
    return struct.pack(f"<{len(cells)}Q", *cells)


def _unpack(blob: bytes | str) -> list[int]:
    data = blob.encode("latin-1") if isinstance(blob, str) else blob
    return list(struct.unpack(f"<{len(data) // 8}Q", data))


def _bytes(value: bytes | str) -> bytes:
    # The client is built without decode_responses, so replies are bytes; typed as either.
    return value.encode() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class IndexVersion:
    """Which state of the index a reader saw: the token of the rebuild (new with every
    :meth:`RedisCellIndex.mark_built`) and the count of changes since the store began."""

    rebuild: bytes
    changes: int


@dataclass(frozen=True, slots=True)
class IndexChanges:
    """What :meth:`RedisCellIndex.changes_since` found: alerts installed at a version the
    caller does not hold (with their covers), and keys the caller holds that are no longer
    installed. ``complete`` is False when some alert moved on while it was read (its new
    record was read, its cover was already gone or not yet there): read again."""

    installed: list[tuple[ActiveAlert, frozenset[int]]]
    removed: list[str]
    complete: bool


class RedisCellIndex:
    """:class:`pipeline.domain.ports.CellIndex` on Redis."""

    def __init__(self, client: RedisClient, *, prefix: str, resolution: int) -> None:
        self._r = client
        self._p = prefix
        self._resolution = resolution

    @property
    def resolution(self) -> int:
        """The H3 resolution of the locations looked up (covers are no finer)."""
        return self._resolution

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

    @property
    def _version(self) -> str:
        return f"{self._p}:version"

    def _tomb_key(self, key: str) -> str:
        return f"{self._p}:tomb:{{{key}}}"

    def _owed_key(self, key: str) -> str:
        return f"{self._p}:owed:{{{key}}}"

    # -- writes ----------------------------------------------------------------------------
    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        too_fine = [c for c in cells if h3i.get_resolution(c) > self._resolution]
        if too_fine:
            raise ValueError(f"cover has cells finer than the index resolution {self._resolution}")
        old = await self.get_alert(alert.key)
        member = f"{alert.version}|{alert.key}".encode()
        await self._sadd_all(cells, member)
        expires = alert.expires_ms + ALERT_KEYS_GRACE_MS if alert.expires_ms is not None else None

        async def flip() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.set(self._cover_key(alert.key, alert.version), _pack(cells), pxat=expires)
                pipe.set(self._alert_key(alert.key), alert.to_bytes(), pxat=expires)
                pipe.sadd(self._registry, alert.key)
                await pipe.execute()

        await guard("put_alert", flip)
        await self._bump()
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

        removed = await guard("remove_alert", unflip)
        await self._bump()
        if old is not None:
            await self._drop_version(key, old.version)
        return removed == 1

    async def tombstone(self, key: str, version: int, keep_until_ms: int) -> None:
        async def write() -> None:
            current = await self._r.get(self._tomb_key(key))
            if current is None or int(current) < version:
                await self._r.set(self._tomb_key(key), str(version), pxat=keep_until_ms)

        await guard("tombstone", write)

    async def cancelled_version(self, key: str) -> int | None:
        raw = await guard("tombstone read", lambda: self._r.get(self._tomb_key(key)))
        return int(raw) if raw is not None else None

    async def owe(self, key: str, version: int, event: bytes, keep_until_ms: int) -> None:
        value = b"%d|" % version + event
        await guard("owe", lambda: self._r.set(self._owed_key(key), value, pxat=keep_until_ms))

    async def owed(self, key: str) -> tuple[int, bytes] | None:
        raw = await guard("owed read", lambda: self._r.get(self._owed_key(key)))
        if raw is None:
            return None
        version, _, event = _bytes(raw).partition(b"|")
        return int(version), event

    async def paid(self, key: str, version: int) -> None:
        # Only the alert's own partition writes its key, one message at a time: read, then
        # delete, needs no transaction.
        owed = await self.owed(key)
        if owed is not None and owed[0] == version:
            await guard("paid", lambda: self._r.delete(self._owed_key(key)))

    async def _bump(self) -> None:
        """Count a change, once it is visible (see :meth:`index_version`)."""
        await guard("index version", lambda: self._r.incr(self._version))

    async def mark_built(self) -> None:
        token = uuid.uuid4().hex.encode()
        await guard("mark built", lambda: self._r.set(self._built, token))

    async def is_built(self) -> bool:
        return bool(await guard("built check", lambda: self._r.exists(self._built)))

    async def _sadd_all(self, cells: Iterable[int], member: bytes) -> None:
        cell_list = list(cells)
        for start in range(0, len(cell_list), _CHUNK):
            chunk = cell_list[start : start + _CHUNK]

            commands = [("SADD", self._cell_key(cell), member) for cell in chunk]
            await guard("cover write", lambda c=commands: bulk(self._r, c))  # type: ignore[misc]

    async def _drop_version(self, key: str, version: int) -> None:
        cover_key = self._cover_key(key, version)
        blob = await guard("cover read", lambda: self._r.get(cover_key))
        if blob:
            member = f"{version}|{key}".encode()
            cells = _unpack(blob)
            for start in range(0, len(cells), _CHUNK):
                chunk = cells[start : start + _CHUNK]

                commands = [("SREM", self._cell_key(cell), member) for cell in chunk]
                await guard("cover cleanup", lambda c=commands: bulk(self._r, c))  # type: ignore[misc]
        await guard("cover cleanup", lambda: self._r.delete(cover_key))

    # -- reads -----------------------------------------------------------------------------
    async def get_alert(self, key: str) -> ActiveAlert | None:
        raw = await guard("get_alert", lambda: self._r.get(self._alert_key(key)))
        return ActiveAlert.from_bytes(_bytes(raw)) if raw else None

    async def active_alerts(self) -> list[ActiveAlert]:
        keys = await guard("active_alerts", lambda: self._r.smembers(self._registry))
        alerts = await self._records(sorted(_bytes(k).decode() for k in keys))
        return [a for a in alerts.values() if a is not None]

    async def cover_of(self, key: str) -> frozenset[int] | None:
        """The installed compact cover of ``key`` (for tools and checks)."""
        alert = await self.get_alert(key)
        if alert is None:
            return None
        blob = await guard("cover read", lambda: self._r.get(self._cover_key(key, alert.version)))
        return frozenset(_unpack(blob)) if blob else frozenset()

    async def installed(self) -> list[tuple[ActiveAlert, frozenset[int]]]:
        """Every alert with its cover, read from Redis (a worker asks its replica instead)."""
        if not await self.is_built():
            raise IndexNotBuilt("the index lost its contents")
        found = []
        for alert in await self.active_alerts():
            blob = await self._cover_blob(alert)
            if blob:
                found.append((alert, frozenset(_unpack(blob))))
        return found

    async def _cover_blob(self, alert: ActiveAlert) -> Any:
        key = self._cover_key(alert.key, alert.version)
        return await guard("cover read", lambda: self._r.get(key))

    async def alerts_at(self, cells: Sequence[int]) -> list[Sequence[ActiveAlert]]:
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
        built, *members = await guard("alerts_at", lambda: bulk(self._r, commands))
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
        out: list[Sequence[ActiveAlert]] = []
        for chain in lookups:
            hits: dict[str, ActiveAlert] = {}
            for c in chain:
                for version, key in found.get(c, ()):
                    record = records.get(key)
                    if record is not None and record.version == version:
                        hits[key] = record
            out.append(list(hits.values()))
        return out

    async def index_version(self) -> IndexVersion:
        """The rebuild token and the change count, in one round trip (one per node on a
        cluster, in parallel). Every put_alert and remove_alert that returned before this
        call began is counted, and what it changed is visible to reads after this one.
        Raises IndexNotBuilt when the store has no rebuild marker."""
        commands = [("GET", self._built), ("GET", self._version)]
        built, changes = await guard("index version", lambda: bulk(self._r, commands))
        if built is None:
            raise IndexNotBuilt("the index has no rebuild marker (empty, flushed or failed over)")
        return IndexVersion(_bytes(built), int(changes or 0))

    async def changes_since(self, held: Mapping[str, int]) -> IndexChanges:
        """How the installed alerts differ from ``held`` (alert key → the version a replica
        holds): the alerts installed at another version, with their covers, and the held
        keys no longer installed. A key and version name one message, so a held alert at
        its installed version has its installed cover. Reads the registry, the records,
        then the covers of the changed alerts: three round trips."""
        registry = await guard("active_alerts", lambda: self._r.smembers(self._registry))
        records = await self._records(sorted(_bytes(k).decode() for k in registry))
        changed = [r for r in records.values() if r is not None and held.get(r.key) != r.version]

        async def read_covers() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for alert in changed:
                    pipe.get(self._cover_key(alert.key, alert.version))
                return list(await pipe.execute())

        blobs = await guard("cover read", read_covers) if changed else []
        installed = [
            (alert, frozenset(_unpack(blob)))
            for alert, blob in zip(changed, blobs, strict=True)
            if blob is not None
        ]
        removed = [key for key in held if records.get(key) is None]
        return IndexChanges(installed, removed, complete=len(installed) == len(changed))

    async def _records(self, keys: Sequence[str]) -> dict[str, ActiveAlert | None]:
        async def read() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(self._alert_key(key))
                return list(await pipe.execute())

        raws = await guard("alert records", read)
        return {
            k: ActiveAlert.from_bytes(r) if r else None for k, r in zip(keys, raws, strict=True)
        }

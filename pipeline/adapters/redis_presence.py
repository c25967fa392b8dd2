"""Where active users are: each user's latest cell, fresh within a window, on Redis.

Keys (``p`` the prefix, W the window; every command names one key, so this works on Redis
Cluster):

    p:pres:b:<bucket>:<slot>   HASH user -> packed (cell, ts) of users last sighted in this
                               resolution-5 bucket during time slot ``ts // W``;
                               PEXPIREAT the end of the next slot
    p:pres:u:{user}            packed (bucket, slot): which hash holds the user now;
                               PXAT ts + W

A sighting is written with ``SET ... GET`` on the user's pointer: when it names another
hash, the user is deleted from that one, so each user sits in exactly one hash. Memory
stays bounded without any sweeper: a slot's hashes expire a window after the slot ends,
and the pointer a window after the user's last sighting.

A fan-out reads whole hashes (``HGETALL``: one command per bucket and slot, not one per
user), which is what makes a state-wide alert over a million users affordable.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import h3.api.basic_int as h3i
from redis.asyncio import Redis

from pipeline.adapters.redis_index import _guard
from pipeline.domain.models import Sighting
from pipeline.domain.presence import BUCKET_RESOLUTION, latest_per_user, plan_buckets, within

_PAIR = struct.Struct("<Qq")
_CHUNK = 10_000


class RedisPresenceStore:
    """:class:`pipeline.domain.ports.PresenceStore` on Redis."""

    def __init__(self, client: Redis, *, prefix: str, window_ms: int) -> None:
        self._r = client
        self._p = prefix
        self._window_ms = window_ms

    def _user_key(self, user_id: str) -> str:
        return f"{self._p}:pres:u:{{{user_id}}}"

    def _hash_key(self, bucket: int, slot: int) -> str:
        return f"{self._p}:pres:b:{bucket:x}:{slot}"

    async def record(self, sightings: Sequence[Sighting]) -> None:
        latest = latest_per_user(sightings)
        if not latest:
            return
        window = self._window_ms
        places = [(h3i.cell_to_parent(s.cell, BUCKET_RESOLUTION), s.ts // window) for s in latest]
        by_hash: dict[tuple[int, int], dict[str, bytes]] = {}
        for s, place in zip(latest, places, strict=True):
            by_hash.setdefault(place, {})[s.user_id] = _PAIR.pack(s.cell, s.ts)

        async def write() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for s, (bucket, slot) in zip(latest, places, strict=True):
                    pointer = _PAIR.pack(bucket, slot)
                    pipe.set(self._user_key(s.user_id), pointer, pxat=s.ts + window, get=True)
                for (bucket, slot), fields in by_hash.items():
                    key = self._hash_key(bucket, slot)
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                    pipe.pexpireat(key, (slot + 2) * window)
                return list(await pipe.execute())

        previous = (await _guard("presence write", write))[: len(latest)]
        moved = [
            (s.user_id, _PAIR.unpack(old))
            for s, place, old in zip(latest, places, previous, strict=True)
            if old is not None and _PAIR.unpack(old) != place
        ]
        if moved:

            async def forget() -> None:
                async with self._r.pipeline(transaction=False) as pipe:
                    for user, (bucket, slot) in moved:
                        pipe.hdel(self._hash_key(bucket, slot), user)
                    await pipe.execute()

            await _guard("presence write", forget)

    async def present_in(
        self, cover: frozenset[int], since_ms: int, chunk: int = _CHUNK
    ) -> AsyncIterator[list[Sighting]]:
        plan = plan_buckets(cover)
        window = self._window_ms
        # Sightings at or after since_ms live in its slot or a later one; none can be newer
        # than a window past since_ms (the caller's clock), hence at most three slots.
        slots = range(since_ms // window, (since_ms + window) // window + 2)
        keys = [self._hash_key(b, slot) for b in sorted(plan.buckets()) for slot in slots]
        latest: dict[bytes, tuple[int, int]] = {}
        unpack = _PAIR.unpack
        for start in range(0, len(keys), 1000):
            part = keys[start : start + 1000]

            async def read(part: list[str] = part) -> list[Any]:
                async with self._r.pipeline(transaction=False) as pipe:
                    for key in part:
                        pipe.hgetall(key)
                    return list(await pipe.execute())

            for fields in await _guard("presence read", read):
                for raw_user, raw in fields.items():
                    cell, ts = unpack(raw)
                    if ts >= since_ms:
                        kept = latest.get(raw_user)
                        if kept is None or ts > kept[1]:
                            latest[raw_user] = (cell, ts)
        found: list[Sighting] = []
        for raw_user, (cell, ts) in latest.items():
            if within(plan, cell):
                found.append(Sighting(raw_user.decode(), cell, ts))
                if len(found) >= chunk:
                    yield found
                    found = []
        if found:
            yield found

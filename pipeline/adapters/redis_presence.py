"""Where active users are: each user's latest cell, fresh within a window, on Redis.

Keys (``p`` the prefix; every command names one key, so this works on Redis Cluster):

    p:pres:u:{user}      packed (cell, ts) of the user's latest sighting; PXAT ts + window
    p:pres:b:<bucket>    ZSET user -> ts of users sighted in this resolution-5 bucket;
                         trimmed to the window on every write, PXAT newest ts + window

Memory stays bounded: a user's key expires a window after their last sighting, and each
bucket only keeps members sighted within the window. A user who moved lingers in their old
bucket until the window passes, so ``present_in`` checks every candidate against their own
latest sighting before reporting them.
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

_SIGHTING = struct.Struct("<Qq")
_CHUNK = 10_000


class RedisPresenceStore:
    """:class:`pipeline.domain.ports.PresenceStore` on Redis."""

    def __init__(self, client: Redis, *, prefix: str, window_ms: int) -> None:
        self._r = client
        self._p = prefix
        self._window_ms = window_ms

    def _user_key(self, user_id: str) -> str:
        return f"{self._p}:pres:u:{{{user_id}}}"

    def _bucket_key(self, bucket: int) -> str:
        return f"{self._p}:pres:b:{bucket:x}"

    async def record(self, sightings: Sequence[Sighting]) -> None:
        latest = latest_per_user(sightings)
        if not latest:
            return
        by_bucket: dict[int, dict[str, int]] = {}
        for s in latest:
            by_bucket.setdefault(h3i.cell_to_parent(s.cell, BUCKET_RESOLUTION), {})[s.user_id] = (
                s.ts
            )
        window = self._window_ms

        async def write() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                for s in latest:
                    pipe.set(
                        self._user_key(s.user_id), _SIGHTING.pack(s.cell, s.ts), pxat=s.ts + window
                    )
                for bucket, members in by_bucket.items():
                    key = self._bucket_key(bucket)
                    newest = max(members.values())
                    pipe.zadd(key, {u: ts for u, ts in members.items()}, gt=True)
                    pipe.zremrangebyscore(key, "-inf", f"({newest - window}")
                    pipe.pexpireat(key, newest + window)
                await pipe.execute()

        await _guard("presence write", write)

    async def present_in(
        self, cover: frozenset[int], since_ms: int, chunk: int = _CHUNK
    ) -> AsyncIterator[list[Sighting]]:
        plan = plan_buckets(cover)
        buckets = sorted(plan.buckets())

        async def candidates() -> set[str]:
            found: set[str] = set()
            for start in range(0, len(buckets), _CHUNK):
                async with self._r.pipeline(transaction=False) as pipe:
                    for bucket in buckets[start : start + _CHUNK]:
                        pipe.zrangebyscore(self._bucket_key(bucket), since_ms, "+inf")
                    for members in await pipe.execute():
                        found.update(m.decode() if isinstance(m, bytes) else m for m in members)
            return found

        users = sorted(await _guard("presence read", candidates))
        for start in range(0, len(users), chunk):
            part = users[start : start + chunk]

            async def latest(part: list[str] = part) -> list[Any]:
                async with self._r.pipeline(transaction=False) as pipe:
                    for user in part:
                        pipe.get(self._user_key(user))
                    return list(await pipe.execute())

            found = []
            for user, raw in zip(part, await _guard("presence read", latest), strict=True):
                if raw is None:
                    continue
                cell, ts = _SIGHTING.unpack(raw)
                if ts >= since_ms and within(plan, cell):
                    found.append(Sighting(user, cell, ts))
            if found:
                yield found

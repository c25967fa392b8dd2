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
user), which is what makes a state-wide alert over a million users affordable. It reads a
page of buckets at a time; a user caught moving between pages while they are read can come
back twice, which the dedup store absorbs.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import chain
from typing import Any

import h3.api.basic_int as h3i

from pipeline.adapters.redis.client import RedisClient, bulk, guard
from pipeline.domain.models import Sighting
from pipeline.domain.targeting.presence import (
    BUCKET_RESOLUTION,
    BucketPlan,
    latest_per_user,
    plan_buckets,
    within,
)

_PAIR = struct.Struct("<Qq")
_CHUNK = 10_000
_PAGE = 300  # buckets read per pipeline


class RedisPresenceStore:
    """:class:`pipeline.domain.ports.PresenceStore` on Redis."""

    def __init__(self, client: RedisClient, *, prefix: str, window_ms: int) -> None:
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

        commands: list[tuple[Any, ...]] = [
            ("SET", self._user_key(s.user_id), _PAIR.pack(*place), "PXAT", s.ts + window, "GET")
            for s, place in zip(latest, places, strict=True)
        ]
        for (bucket, slot), fields in by_hash.items():
            key = self._hash_key(bucket, slot)
            commands.append(("HSET", key, *chain.from_iterable(fields.items())))
            commands.append(("PEXPIREAT", key, (slot + 2) * window))
        replies = await guard("presence write", lambda: bulk(self._r, commands))
        moved = [
            ("HDEL", self._hash_key(*_PAIR.unpack(old)), s.user_id)
            for s, place, old in zip(latest, places, replies[: len(latest)], strict=True)
            if old is not None and _PAIR.unpack(old) != place
        ]
        if moved:
            await guard("presence write", lambda: bulk(self._r, moved))

    async def present_in(
        self, cover: frozenset[int], since_ms: int, chunk: int = _CHUNK
    ) -> AsyncIterator[list[str]]:
        plan = plan_buckets(cover)
        window = self._window_ms
        # Sightings at or after since_ms live in its slot or a later one; none can be newer
        # than a window past since_ms (the caller's clock), hence at most three slots.
        slots = range(since_ms // window, (since_ms + window) // window + 2)
        buckets = sorted(plan.buckets())
        found: list[str] = []
        # A page of buckets at a time, all slots of a bucket in one page: memory stays
        # bounded whatever the cover, and the newest sighting of a user wins within it.
        for start in range(0, len(buckets), _PAGE):
            page = buckets[start : start + _PAGE]
            keys = [self._hash_key(b, slot) for b in page for slot in slots]

            commands = [("HGETALL", key) for key in keys]
            replies = await guard("presence read", lambda c=commands: bulk(self._r, c))  # type: ignore[misc]
            for users in self._fresh_within(plan, page, len(slots), replies, since_ms):
                found.extend(users)
                while len(found) >= chunk:
                    yield found[:chunk]
                    found = found[chunk:]
        if found:
            yield found

    @staticmethod
    def _fresh_within(
        plan: BucketPlan,
        page: Sequence[int],
        slots: int,
        replies: Sequence[dict[bytes, bytes] | list[bytes]],
        since_ms: int,
    ) -> Iterator[list[str]]:
        """Per bucket of ``page``: its users fresh since ``since_ms`` and inside the cover.
        ``replies`` hold each bucket's hashes, oldest slot first."""
        unpack = _PAIR.unpack
        for i, bucket in enumerate(page):
            hashes = [_fields(reply) for reply in replies[i * slots : (i + 1) * slots]]
            if bucket in plan.whole:
                # Every cell of the bucket is covered: only the oldest slot's users need
                # their time checked, and a user met twice (moving) is inside either way.
                oldest, *newer = hashes
                fresh = [u for u, raw in oldest.items() if unpack(raw)[1] >= since_ms]
                fresh.extend(chain.from_iterable(newer))
                yield [u.decode() for u in dict.fromkeys(fresh)]
                continue
            latest: dict[bytes, tuple[int, int]] = {}
            for fields in hashes:
                for raw_user, raw in fields.items():
                    cell, ts = unpack(raw)
                    if ts >= since_ms:
                        kept = latest.get(raw_user)
                        if kept is None or ts > kept[1]:
                            latest[raw_user] = (cell, ts)
            yield [u.decode() for u, (cell, _) in latest.items() if within(plan, cell)]


def _fields(reply: dict[bytes, bytes] | list[bytes]) -> dict[bytes, bytes]:
    """An HGETALL reply as a dict: RESP3 (the default) gives one, RESP2 a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))

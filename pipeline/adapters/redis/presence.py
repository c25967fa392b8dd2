"""Where active users are: each user's latest cell, fresh within a window, on Redis, held
under the partition of the locations topic the user's events come from.

Keys (``p`` the prefix, W the window; every command names one key, so this works on Redis
Cluster):

    p:pres:b:<bucket>:<slot>:<partition>
        HASH user -> 8 bytes: the cell (its resolution and its digits below the bucket's)
        and the time (milliseconds into the slot) of the user's latest sighting in this
        resolution-5 bucket during time slot ``ts // W``; PEXPIREAT (slot + 2) * W, the
        end of the next slot

That is all: no per-user key. A present user costs one hash field (the id, 8 bytes of
value and the hash table's entry: 60 to 100 bytes depending on the id's length, measured
by ``make bench``); the hashes themselves are a few thousand per partition and slot.

Partition-owned, as a Kafka Streams store is: the locations topic is keyed by user, so all
of a user's sightings come to the one worker that owns its partition, which is the only
writer of that partition's hashes and the only one that fans alerts out over them. Memory
stays bounded without any sweeper: a slot's hashes expire a window after the slot ends.

Moves. The store keeps a bounded LRU (``known_users``, default 1,000,000 users; 0 turns it
off) of the place (bucket, slot, partition) it last wrote each user at:

* a user sighted again at the same place (the usual case) costs only its field in that
  hash's ``HSET`` (one per hash and batch);
* a user the LRU knows elsewhere (another bucket, a new slot) is written at the new place
  and deleted from the old one (``HDEL``, one per old hash and batch) in the same round
  trip, so the fan-out over the old bucket no longer finds it;
* a user the LRU does not know (first sighting at this worker since it took the
  partition, or forgotten) is written at its place only. An entry an earlier owner left in
  another bucket of the same slot stays there until it expires: a fan-out over that
  bucket within the next two windows could still card the user by that older sighting,
  unless the user's newer one is in the same read (then the latest wins). Size
  ``known_users`` to the present users a worker owns to keep this to restarts and
  rebalances.

A hash's ``PEXPIREAT`` only goes with an ``HSET`` that may create the hash, that is when
none of its fields is known to be there already. An ``HSET`` that added more fields than
it had newcomers (a user the LRU placed there was gone: the hash was deleted or expired
and is recreated) gets its expiry in a second round trip. The LRU is updated only once the
writes succeeded; a failed write forgets the users it thought stayed where they were, as
it may have run in part.

A fan-out reads whole hashes (one command per bucket, slot and partition, not one per
user: ``HKEYS`` where only the users matter, a bucket wholly inside the cover in a slot
newer than the oldest; else ``HGETALL``), a page of buckets at a time, and keeps each
user's latest sighting among a bucket's hashes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import attrgetter, eq, floordiv, not_
from typing import Any

from pipeline.adapters.redis.client import RedisClient, bulk, guard
from pipeline.domain.geo.cells import parent_mask, parents_of
from pipeline.domain.models import Sighting
from pipeline.domain.targeting.presence import (
    BUCKET_RESOLUTION,
    BucketPlan,
    latest_per_user,
    plan_buckets,
    within,
)

_CHUNK = 10_000
_PAGE = 300  # buckets read per pipeline
_USER, _CELL, _TS, _PART = (
    attrgetter("user_id"),
    attrgetter("cell"),
    attrgetter("ts"),
    attrgetter("partition"),
)
_BUCKET_MASK = parent_mask(BUCKET_RESOLUTION)
_LOW30 = (1 << 30) - 1  # a cell's digits of resolutions 6 to 15; a time's ms into its slot
_RES_SHIFT = 52
_RES_BITS = 0xF << _RES_SHIFT
_BUCKET_KEEP = ~(_RES_BITS | _LOW30)  # a bucket's bits that its cells share
MAX_WINDOW_MS = _LOW30  # about 12.4 days: the ms into a slot take 30 bits
KNOWN_USERS = 1_000_000  # the default of match.presence_known_users

Place = tuple[int, int, int]  # (bucket, slot, partition): names one hash


def pack(cell: int, offset_ms: int) -> bytes:
    """A sighting's 8 bytes: its cell's resolution (4 bits), its cell's digits below the
    bucket (30 bits) and its milliseconds into the slot (30 bits)."""
    word = ((cell >> _RES_SHIFT) & 0xF) << 60 | (cell & _LOW30) << 30 | offset_ms
    return word.to_bytes(8, "little")


def _offset(raw: bytes) -> int:
    """The ms into the slot of a packed value (:func:`unpack` without the cell)."""
    return int.from_bytes(raw, "little") & _LOW30


def unpack(bucket: int, raw: bytes) -> tuple[int, int]:
    """``(cell, ms into the slot)`` of a value packed under ``bucket``."""
    word = int.from_bytes(raw, "little")
    cell = (bucket & _BUCKET_KEEP) | (word >> 60) << _RES_SHIFT | (word >> 30) & _LOW30
    return cell, word & _LOW30


@dataclass(slots=True)
class _Writes:
    """One batch's writes: the users of the latest sightings and the place of each; per
    hash, the fields it gets and the users the LRU places there already; the users who
    left a hash the LRU knew them in, per that hash."""

    users: list[str] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    fields: dict[Place, dict[str, bytes]] = field(default_factory=dict)
    staying: dict[Place, int] = field(default_factory=dict)
    left: dict[Place, list[str]] = field(default_factory=dict)


class RedisPresenceStore:
    """:class:`pipeline.domain.ports.PresenceStore` on Redis. ``known_users`` bounds the LRU
    of where this store last wrote each user (0: no LRU, a move leaves the old entry to
    expire)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        window_ms: int,
        known_users: int = KNOWN_USERS,
    ) -> None:
        if known_users < 0:
            raise ValueError(f"known_users must be >= 0, not {known_users}")
        if not 0 < window_ms <= MAX_WINDOW_MS:
            raise ValueError(f"the presence window must be 1 to {MAX_WINDOW_MS} ms")
        self._r = client
        self._p = prefix
        self._window_ms = window_ms
        # user -> the place this store last wrote it at, for the recently written users.
        self._known = _Recent(known_users)
        # One tuple per place of the recent slots, which the LRU's values share.
        self._places: dict[Place, Place] = {}
        self._newest_slot = 0
        self._last_plan: tuple[frozenset[int], BucketPlan] | None = None

    def _hash_key(self, bucket: int, slot: int, partition: int) -> str:
        return f"{self._p}:pres:b:{bucket:x}:{slot}:{partition}"

    def _expiry(self, place: Place) -> int:
        """When the hash of ``place`` expires: the end of the slot after ``place``'s."""
        return (place[1] + 2) * self._window_ms

    async def record(self, sightings: Sequence[Sighting]) -> None:
        latest = latest_per_user(sightings)
        if not latest:
            return
        writes = self._plan(latest)
        commands: list[tuple[Any, ...]] = []
        hset_at: list[int] = []
        for place, fields in writes.fields.items():
            key = self._hash_key(*place)
            hset_at.append(len(commands))
            commands.append(("HSET", key, *chain.from_iterable(fields.items())))
            if place not in writes.staying:  # this HSET may create the hash
                commands.append(("PEXPIREAT", key, self._expiry(place)))
        for place, users in writes.left.items():
            commands.append(("HDEL", self._hash_key(*place), *users))
        try:
            replies = await guard("presence write", lambda: bulk(self._r, commands))
        except BaseException:
            # Some commands may have run (a hash recreated without its expiry, say): the
            # users thought to stay are written as unknown ones on the retry.
            self._forget_staying(writes)
            raise
        # A hash that lacked users the LRU placed there was recreated: its expiry.
        lacking = [
            ("PEXPIREAT", self._hash_key(*place), self._expiry(place))
            for (place, fields), at in zip(writes.fields.items(), hset_at, strict=True)
            if (staying := writes.staying.get(place, 0)) and replies[at] > len(fields) - staying
        ]
        if lacking:
            try:
                await guard("presence write", lambda: bulk(self._r, lacking))
            except BaseException:
                self._forget_staying(writes)
                raise
        self._known.remember(writes.users, writes.places)

    def _plan(self, latest: Sequence[Sighting]) -> _Writes:
        """Each column computed in C over the whole batch; one Python loop groups them."""
        users: list[str] = list(map(_USER, latest))
        cells: list[int] = list(map(_CELL, latest))
        times: list[int] = list(map(_TS, latest))
        window = self._window_ms
        slots = list(map(floordiv, times, repeat(window)))
        buckets = parents_of(cells, _BUCKET_MASK)
        places = self._interned(
            list(zip(buckets, slots, map(_PART, latest), strict=True)), max(slots)
        )
        writes = _Writes(users=users, places=places)
        fields = writes.fields
        offsets = [t - s * window for t, s in zip(times, slots, strict=True)]
        for user, place, value in zip(users, places, map(pack, cells, offsets), strict=True):
            grouped = fields.get(place)
            if grouped is None:
                grouped = fields[place] = {}
            grouped[user] = value
        wases = list(self._known.places_of(users))
        same = list(map(eq, wases, places))
        staying = writes.staying
        for place in compress(places, same):
            staying[place] = staying.get(place, 0) + 1
        left = writes.left
        for user, was in compress(zip(users, wases, strict=True), map(not_, same)):
            if was is not None:
                left.setdefault(was, []).append(user)
        return writes

    def _interned(self, places: list[Place], newest: int) -> list[Place]:
        """``places`` (of slots up to ``newest``) as the tuples the store keeps for them (the
        LRU's values share them): one per place of the last three slots."""
        if newest > self._newest_slot:
            self._newest_slot = newest
            self._places = {p: p for p in self._places if p[1] >= newest - 2}
        kept = self._places
        return list(map(kept.setdefault, places, places))

    def _forget_staying(self, writes: _Writes) -> None:
        same = map(eq, self._known.places_of(writes.users), writes.places)
        self._known.forget(compress(writes.users, same))

    @property
    def remembered(self) -> int:
        """How many users the LRU holds."""
        return len(self._known)

    async def present_in(
        self,
        cover: frozenset[int],
        since_ms: int,
        partitions: frozenset[int] | None,
        chunk: int = _CHUNK,
    ) -> AsyncIterator[list[str]]:
        if partitions is None:
            raise ValueError("the Redis presence store reads named partitions only")
        plan = self._plan_of(cover)
        window = self._window_ms
        # Sightings at or after since_ms live in its slot or a later one; none can be newer
        # than a window past since_ms (the caller's clock), hence at most three slots.
        slots = range(since_ms // window, (since_ms + window) // window + 2)
        owned = sorted(partitions)
        places = [(slot, p) for slot in slots for p in owned]
        buckets = sorted(plan.buckets())
        whole, oldest_slot = plan.whole, slots[0]
        found: list[str] = []
        if not places:
            return
        # A page of buckets at a time, all hashes of a bucket in one page: memory stays
        # bounded whatever the cover, and the newest sighting of a user wins within it.
        for start in range(0, len(buckets), _PAGE):
            page = buckets[start : start + _PAGE]
            # Only the users (HKEYS, half the reply to parse) where no sighting's time or
            # cell needs checking: a bucket wholly inside the cover, a slot after the oldest.
            commands = [
                ("HKEYS" if b in whole and s != oldest_slot else "HGETALL", self._hash_key(b, s, p))
                for b in page
                for s, p in places
            ]
            replies = await guard("presence read", lambda c=commands: bulk(self._r, c))  # type: ignore[misc]
            for i, bucket in enumerate(page):
                hashes = replies[i * len(places) : (i + 1) * len(places)]
                found.extend(self._fresh_within(plan, bucket, places, hashes, since_ms))
                while len(found) >= chunk:
                    yield found[:chunk]
                    found = found[chunk:]
        if found:
            yield found

    def _plan_of(self, cover: frozenset[int]) -> BucketPlan:
        """The bucket plan of ``cover``, made once for the passes over its partitions."""
        last = self._last_plan
        if last is None or last[0] is not cover:
            last = self._last_plan = (cover, plan_buckets(cover))
        return last[1]

    def _fresh_within(
        self,
        plan: BucketPlan,
        bucket: int,
        places: Sequence[tuple[int, int]],
        hashes: Sequence[dict[bytes, bytes] | list[bytes]],  # HKEYS replies: lists
        since_ms: int,
    ) -> list[str]:
        """The users of one bucket's hashes (``places`` says each one's slot) fresh since
        ``since_ms`` and inside the cover, by their latest sighting there."""
        window = self._window_ms
        oldest_slot = places[0][0]
        if bucket in plan.whole:
            # Every cell of the bucket is covered: only the oldest slot's users need their
            # time checked, and a user met twice (moving) is inside either way.
            fresh: list[bytes] = []
            for (slot, _), reply in zip(places, hashes, strict=True):
                if slot == oldest_slot:
                    start = since_ms - slot * window
                    fresh.extend(u for u, raw in _fields(reply).items() if _offset(raw) >= start)
                else:
                    fresh.extend(reply)  # HKEYS: the users only
            return list(map(bytes.decode, dict.fromkeys(fresh)))
        latest: dict[bytes, tuple[int, int]] = {}
        for (slot, _), reply in zip(places, hashes, strict=True):
            base = slot * window
            for raw_user, raw in _fields(reply).items():
                cell, offset = unpack(bucket, raw)
                ts = base + offset
                if ts >= since_ms:
                    kept = latest.get(raw_user)
                    if kept is None or ts > kept[1]:
                        latest[raw_user] = (cell, ts)
        return [u.decode() for u, (cell, _) in latest.items() if within(plan, cell)]


class _Recent:
    """Where each recently written user was written: an LRU of about ``bound`` users, in
    two generations of plain dicts. New writes go to the young one; once it holds half the
    bound, it becomes the old one and the previous old one is dropped. A lookup finds a
    user in either. So it holds the users of the latest writes, between half the bound
    and the bound of them (more only while one batch alone has more than half the bound),
    and a user written again is young again. A bound of 0 remembers nothing."""

    __slots__ = ("_half", "_old", "_young")

    def __init__(self, bound: int) -> None:
        self._half = (bound + 1) // 2
        self._young: dict[str, Place] = {}
        self._old: dict[str, Place] = {}

    def __len__(self) -> int:
        young, old = self._young, self._old
        return len(young) + len(old) - sum(map(young.__contains__, old))

    def places_of(self, users: Sequence[str]) -> Iterator[Place | None]:
        """Each user's place, or None when not remembered."""
        return map(self._young.get, users, map(self._old.get, users))

    def remember(self, users: Sequence[str], places: Sequence[Place]) -> None:
        if not self._half:
            return
        self._young.update(zip(users, places, strict=True))
        if len(self._young) >= self._half:
            self._old, self._young = self._young, {}

    def forget(self, users: Iterable[str]) -> None:
        for user in users:
            self._young.pop(user, None)
            self._old.pop(user, None)


def _fields(reply: dict[bytes, bytes] | list[bytes]) -> dict[bytes, bytes]:
    """An HGETALL reply as a dict: RESP3 (the default) gives one, RESP2 a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))

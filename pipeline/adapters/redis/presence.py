"""Where active users are: each user's latest cell, fresh within a window, on Redis.

Keys (``p`` the prefix, W the window; every command names one key, so this works on Redis
Cluster):

    p:pres:b:<bucket>:<slot>   HASH user -> packed (cell, ts) of users last sighted in this
                               resolution-5 bucket during time slot ``ts // W``;
                               PEXPIREAT (slot + 2) * W, the end of the next slot
    p:pres:u:{user}            packed (bucket, slot): which hash holds the user now;
                               PXAT (slot + 2) * W, the instant that hash expires

Each user sits in exactly one hash. A sighting at another place (bucket or slot) than the
user's last one rewrites the pointer (``SET``) and deletes the user from the hash it named
(``HDEL``, one per old hash and batch, naming all the users who left it), even when only
the slot changed: an older slot's entry left behind would make a fan-out over that bucket
find the user once it has left the bucket. Memory stays bounded without any sweeper: a
slot's hashes expire a window after the slot ends, and a pointer at the same instant as
the hash it names, so it lives exactly as long as the entry it points to (which is what
lets a sighting at the same place skip the pointer).

Writes are cheap: users are partition-affine (all of a user's locations come to one
worker), so the store keeps a bounded LRU (``known_users``, default 1,000,000 users, about
80 MB plus the ids; 0 turns it off) of the place it last wrote each user at, and skips what
Redis already holds. The LRU is two generations of plain dicts (:class:`_Recent`): every
operation on a batch runs in C, which an ``OrderedDict``'s per-user moves did not.

* a user sighted again at the same place (the usual case) costs only its field in that
  hash's ``HSET`` (one per hash and batch): the pointer already names the hash and expires
  with it, so it is not written;
* a user the LRU knows elsewhere: ``SET pointer ... GET`` and the ``HDEL`` from the old hash,
  in the same round trip;
* a user the LRU does not know (first sighting at this worker, after a restart or a
  rebalance): ``SET pointer ... GET`` and, when the reply names another hash, its ``HDEL``
  in a second round trip;
* a hash's ``PEXPIREAT`` only goes with an ``HSET`` that may create the hash, that is when
  none of its fields is known to be there already. A hash that exists has its expiry (it
  was set with the ``HSET`` that created it); one whose last user left was deleted by that
  ``HDEL``, and is recreated only by a newcomer, whose ``HSET`` carries the expiry again
  (remembering which expiries the store already set would not do: any worker's ``HDEL``
  may have deleted the hash since).

The LRU is only a hint, checked against the replies Redis sends anyway, so a stale entry
(the user's partition went to another worker and came back) is caught: a pointer's ``GET``
naming another hash than the LRU thought gets that hash's ``HDEL`` too, and an ``HSET``
that added more fields than it had newcomers (a user the LRU placed there was gone, or the
hash was recreated) has that hash's known users rewritten as unknown ones and its expiry
set, in a second round trip. The LRU is updated only once the writes succeeded. Forgetting
is always safe (a forgotten user costs one pointer write), so a failed write also forgets
the users it thought stayed where they were, as it may have run in part (recreated a hash
without its expiry, say): the retry checks them again. The stored values are the same as
without the LRU, so reads give the same answers.

A fan-out reads whole hashes (``HGETALL``: one command per bucket and slot, not one per
user), which is what makes a state-wide alert over a million users affordable. It reads a
page of buckets at a time; a user caught moving between pages while they are read can come
back twice, which the dedup store absorbs.
"""

from __future__ import annotations

import struct
from collections import Counter
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

_PAIR = struct.Struct("<Qq")
_CHUNK = 10_000
_PAGE = 300  # buckets read per pipeline
_USER, _CELL, _TS = attrgetter("user_id"), attrgetter("cell"), attrgetter("ts")
_BUCKET_MASK = parent_mask(BUCKET_RESOLUTION)
KNOWN_USERS = 1_000_000  # the default of match.presence_known_users

Place = tuple[int, int]  # (bucket, slot): names one hash


@dataclass(slots=True)
class _Writes:
    """One batch's writes: the users of the latest sightings and the place of each; per
    hash, the fields it gets and the users the LRU places there already; the users whose
    pointer is written, with the place the LRU had for them."""

    users: list[str] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    fields: dict[Place, dict[str, bytes]] = field(default_factory=dict)
    staying: dict[Place, list[str]] = field(default_factory=dict)
    moving: list[tuple[str, Place, Place | None]] = field(default_factory=list)


class RedisPresenceStore:
    """:class:`pipeline.domain.ports.PresenceStore` on Redis. ``known_users`` bounds the LRU
    of where this store last wrote each user (0: no LRU, every sighting writes its
    pointer)."""

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
        self._r = client
        self._p = prefix
        self._window_ms = window_ms
        # user -> the place this store last wrote it at, for the recently written users.
        self._known = _Recent(known_users)
        # One tuple per place of the recent slots, which the LRU's values share.
        self._places: dict[Place, Place] = {}
        self._newest_slot = 0

    def _user_key(self, user_id: str) -> str:
        return f"{self._p}:pres:u:{{{user_id}}}"

    def _hash_key(self, bucket: int, slot: int) -> str:
        return f"{self._p}:pres:b:{bucket:x}:{slot}"

    def _expiry(self, place: Place) -> int:
        """When the hash of ``place``, and every pointer naming it, expires: the end of
        the slot after ``place``'s."""
        return (place[1] + 2) * self._window_ms

    def _pointer(self, user_id: str, place: Place) -> tuple[Any, ...]:
        return (
            "SET",
            self._user_key(user_id),
            _PAIR.pack(*place),
            "PXAT",
            self._expiry(place),
            "GET",
        )

    def _deletes(self, leaving: dict[Place, list[str]]) -> Iterator[tuple[Any, ...]]:
        """One HDEL per hash, of all the users leaving it."""
        for place, users in leaving.items():
            yield ("HDEL", self._hash_key(*place), *users)

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
        set_at = len(commands)
        commands.extend(self._pointer(user, place) for user, place, _ in writes.moving)
        left: dict[Place, list[str]] = {}
        for user, _, was in writes.moving:
            if was is not None:
                left.setdefault(was, []).append(user)
        commands.extend(self._deletes(left))
        try:
            replies = await guard("presence write", lambda: bulk(self._r, commands))
        except BaseException:
            # Some commands may have run: a hash recreated without its expiry, say. The
            # users thought to stay are checked again on the retry, as unknown ones.
            self._forget(chain.from_iterable(writes.staying.values()))
            raise

        # What the replies tell: the hashes pointers named that the LRU did not know of,
        # and the hashes that lacked users the LRU placed there.
        olds = map(_place_of, replies[set_at : set_at + len(writes.moving)])
        stray: dict[Place, list[str]] = {}
        arrived: Counter[Place] = Counter()  # moving users Redis had at the place already
        for (user, place, was), old in zip(writes.moving, olds, strict=True):
            if old == place:
                arrived[place] += 1
            elif old is not None and old != was:
                stray.setdefault(old, []).append(user)
        recheck: list[tuple[str, Place]] = []
        for (place, fields), at in zip(writes.fields.items(), hset_at, strict=True):
            staying = writes.staying.get(place, [])
            newcomers = len(fields) - len(staying) - arrived[place]
            if staying and replies[at] > newcomers:
                recheck.extend((user, place) for user in staying)
        if stray or recheck:
            try:
                await self._repair(stray, recheck)
            except BaseException:
                self._forget(user for user, _ in recheck)
                raise
        self._remember(writes.users, writes.places)

    def _plan(self, latest: Sequence[Sighting]) -> _Writes:
        """Each column computed in C over the whole batch; one Python loop groups them."""
        users: list[str] = list(map(_USER, latest))
        cells: list[int] = list(map(_CELL, latest))
        times: list[int] = list(map(_TS, latest))
        window = self._window_ms
        slots = map(floordiv, times, repeat(window))
        places = self._interned(
            list(zip(parents_of(cells, _BUCKET_MASK), slots, strict=True)), max(times) // window
        )
        writes = _Writes(users=users, places=places)
        fields, staying = writes.fields, writes.staying
        for user, place, value in zip(users, places, map(_PAIR.pack, cells, times), strict=True):
            grouped = fields.get(place)
            if grouped is None:
                grouped = fields[place] = {}
            grouped[user] = value
        wases = list(self._known.places_of(users))
        same = list(map(eq, wases, places))
        if any(same):
            for user, place in compress(zip(users, places, strict=True), same):
                staying.setdefault(place, []).append(user)
        writes.moving = list(compress(zip(users, places, wases, strict=True), map(not_, same)))
        return writes

    def _interned(self, places: list[Place], newest: int) -> list[Place]:
        """``places`` (of slots up to ``newest``) as the tuples the store keeps for them (the
        LRU's values share them): one per place of the last three slots."""
        if newest > self._newest_slot:
            self._newest_slot = newest
            self._places = {p: p for p in self._places if p[1] >= newest - 2}
        kept = self._places
        return list(map(kept.setdefault, places, places))

    def _remember(self, users: list[str], places: list[Place]) -> None:
        self._known.remember(users, places)

    def _forget(self, users: Iterable[str]) -> None:
        self._known.forget(users)

    @property
    def remembered(self) -> int:
        """How many users the LRU holds."""
        return len(self._known)

    async def _repair(
        self, stray: dict[Place, list[str]], recheck: list[tuple[str, Place]]
    ) -> None:
        """The second round trip: the deletes from the hashes only the pointers knew of,
        and the users an HSET found missing written as unknown ones (their pointer's
        ``GET``, and in a third round trip the delete from the hash it named), with the
        expiry of their hashes, which may have been recreated."""
        commands: list[tuple[Any, ...]] = list(self._deletes(stray))
        commands.extend(
            ("PEXPIREAT", self._hash_key(*place), self._expiry(place))
            for place in dict.fromkeys(place for _, place in recheck)
        )
        set_at = len(commands)
        commands.extend(self._pointer(user, place) for user, place in recheck)
        replies = await guard("presence write", lambda: bulk(self._r, commands))
        again: dict[Place, list[str]] = {}
        for (user, place), raw in zip(recheck, replies[set_at:], strict=True):
            old = _place_of(raw)
            if old is not None and old != place:
                again.setdefault(old, []).append(user)
        if again:
            moved = list(self._deletes(again))
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


def _place_of(raw: bytes | None) -> Place | None:
    """A pointer's packed (bucket, slot), as read back by ``SET ... GET``."""
    if raw is None:
        return None
    bucket, slot = _PAIR.unpack(raw)
    return (bucket, slot)


def _fields(reply: dict[bytes, bytes] | list[bytes]) -> dict[bytes, bytes]:
    """An HGETALL reply as a dict: RESP3 (the default) gives one, RESP2 a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))

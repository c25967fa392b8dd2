"""The dedup store on Redis: which users already got an alert's card, and which fan-outs
finished.

Key layout (``p`` is the configured prefix, ``K`` an alert key ``sender|identifier``, ``P``
a partition of the locations topic):

    p:seen:{K}:P     STRING: the 8-byte fingerprints of the users of P who got K's card,
                     appended (APPEND); PEXPIREAT the latest card's expiry (plus a grace)
    p:fanned:{K}     SET of ``<version>:<partition>``: the fan-outs of K that finished;
                     PEXPIREAT as the cards

8 bytes per card recorded (a set member costs some 60 bytes in Redis). A fingerprint is
the first 8 bytes of the card's digest (:func:`pipeline.domain.targeting.cards.card_digest`,
the SHA-256 whose first 16 bytes are the card's ``event_id``), so a fan-out hashes each user
once for both: two users of one alert and partition share one with a probability of about
n²/2⁶⁵ (n users: 3·10⁻⁸ for a million), which would leave the second without a card.

The check runs in process. Records are partition-owned: the worker that owns a partition
of the locations topic is the only one that cards its users, by location batch or by
fan-out, so it loads an alert's record of the partition once (one ``GET``), answers from
it, and adds what it records itself. :meth:`RedisDedupStore.own` drops what it held of the
partitions it no longer owns, so a partition that comes back is loaded again with what
the other owner recorded meanwhile. Two workers that briefly both hold a partition in a
rebalance may both card a user; the two cards are byte-identical (same ``event_id``).

Every command names one key, so this works unchanged on Redis Cluster; the ``{K}`` hash tag
puts an alert's records in the slot of its other keys (:mod:`pipeline.adapters.redis.index`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from pipeline.adapters.redis.client import ALERT_KEYS_GRACE_MS, RedisClient, bulk, guard
from pipeline.domain.targeting.cards import card_digest

FINGERPRINT_BYTES = 8
_KEY, _USER = itemgetter(0), itemgetter(1)  # of an (alert key, user id) pair
_PRUNE_ABOVE = 256  # held records before the expired ones are dropped


def fingerprints(
    pairs: Sequence[tuple[str, str]], digests: Sequence[bytes] | None = None
) -> list[bytes]:
    """The 8 bytes recorded for each pair: the start of its card digest (the caller's
    ``digests``, else computed)."""
    if digests is None:
        digests = [card_digest(k, u) for k, u in pairs]
    return [d[:FINGERPRINT_BYTES] for d in digests]


@dataclass(slots=True)
class _Held:
    """One alert's record of one partition as this worker holds it: the fingerprints that
    were in Redis when it loaded the record, and the users it recorded itself since (so
    that the usual check, of a record only this worker wrote, hashes nothing)."""

    loaded: frozenset[bytes]
    users: set[str] = field(default_factory=set)
    until_ms: int | None = None  # None until this worker recorded a card


class RedisDedupStore:
    """:class:`pipeline.domain.ports.DedupStore` on Redis (see the module docstring)."""

    def __init__(self, client: RedisClient, *, prefix: str) -> None:
        self._r = client
        self._p = prefix
        self._held: dict[tuple[str, int], _Held] = {}

    def _key(self, alert_key: str, partition: int) -> str:
        return f"{self._p}:seen:{{{alert_key}}}:{partition}"

    def _fanned_key(self, alert_key: str) -> str:
        return f"{self._p}:fanned:{{{alert_key}}}"

    async def _records(self, groups: Iterable[tuple[str, int]]) -> list[_Held]:
        """The held record of each (alert, partition), loading the missing ones in one
        round trip."""
        wanted = list(groups)
        missing = [g for g in dict.fromkeys(wanted) if g not in self._held]
        if missing:
            keys = [self._key(*g) for g in missing]
            blobs = await guard("dedup read", lambda: bulk(self._r, [("GET", k) for k in keys]))
            if len(self._held) > _PRUNE_ABOVE:
                now = time.time() * 1000
                self._held = {
                    g: h for g, h in self._held.items() if h.until_ms is None or h.until_ms >= now
                }
            for group, blob in zip(missing, blobs, strict=True):
                data = bytes(blob or b"")
                width = FINGERPRINT_BYTES
                prints = frozenset(data[i : i + width] for i in range(0, len(data), width))
                self._held.setdefault(group, _Held(prints))
        return [self._held[g] for g in wanted]

    async def unseen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> list[bool]:
        if not pairs:
            return []
        users = [u for _, u in pairs]
        if _one_group(pairs, partitions):  # a fan-out chunk: one record, loaded once
            held = await self._records([(pairs[0][0], partitions[0])])
            if not held[0].loaded and held[0].users.isdisjoint(users):
                return [True] * len(users)  # as a rule: none of them carded yet
            records = held * len(pairs)
        else:
            records = held = await self._records(
                (k, p) for (k, _), p in zip(pairs, partitions, strict=True)
            )
        if not any(h.loaded for h in held):  # hashing nothing
            return [u not in h.users for h, u in zip(records, users, strict=True)]
        prints = fingerprints(pairs, digests)
        return [
            u not in h.users and p not in h.loaded
            for h, u, p in zip(records, users, prints, strict=True)
        ]

    async def mark_seen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        expires_at_ms: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> int:
        if not pairs:
            return 0
        groups = _grouped(pairs, partitions, expires_at_ms, fingerprints(pairs, digests))
        records = await self._records(groups)
        new: dict[tuple[str, int], dict[str, bytes]] = {}
        for (group, (by_user, _)), held in zip(groups.items(), records, strict=True):
            if held.users.isdisjoint(by_user) and held.loaded.isdisjoint(by_user.values()):
                new[group] = by_user  # a fan-out chunk: all of them, as a rule
                continue
            users = by_user.keys() - held.users
            if held.loaded:
                users = {u for u in users if by_user[u] not in held.loaded}
            if users:
                new[group] = {u: by_user[u] for u in users}
        commands: list[tuple[Any, ...]] = []
        for group, fresh in new.items():
            commands.append(("APPEND", self._key(*group), b"".join(fresh.values())))
        for group, (_, latest) in groups.items():
            key = self._key(*group)
            at = latest + ALERT_KEYS_GRACE_MS
            commands.append(("PEXPIREAT", key, at, "NX"))
            commands.append(("PEXPIREAT", key, at, "GT"))
        await guard("dedup write", lambda: bulk(self._r, commands))
        for group, fresh in new.items():
            self._held[group].users.update(fresh)
        for group, (_, latest) in groups.items():
            held = self._held[group]
            held.until_ms = max(held.until_ms or 0, latest + ALERT_KEYS_GRACE_MS)
        return sum(map(len, new.values()))

    def own(self, partitions: frozenset[int]) -> None:
        self._held = {g: h for g, h in self._held.items() if g[1] in partitions}

    async def fanned_out(self, alert_key: str, version: int) -> frozenset[int]:
        members = await guard("fan-out read", lambda: self._r.smembers(self._fanned_key(alert_key)))
        prefix = f"{version}:"
        found = (bytes(m).decode() if not isinstance(m, str) else m for m in members)
        return frozenset(int(m[len(prefix) :]) for m in found if m.startswith(prefix))

    async def mark_fanned_out(
        self, alert_key: str, version: int, partitions: Sequence[int], keep_until_ms: int
    ) -> None:
        if not partitions:
            return
        key = self._fanned_key(alert_key)
        at = keep_until_ms + ALERT_KEYS_GRACE_MS
        commands: list[tuple[Any, ...]] = [
            ("SADD", key, *(f"{version}:{p}" for p in partitions)),
            ("PEXPIREAT", key, at, "NX"),
            ("PEXPIREAT", key, at, "GT"),
        ]
        await guard("fan-out write", lambda: bulk(self._r, commands))


def _one_group(pairs: Sequence[tuple[str, str]], partitions: Sequence[int]) -> bool:
    """Whether every pair is of one alert and partition, checked without a loop per pair."""
    key, partition = pairs[0][0], partitions[0]
    return partitions.count(partition) == len(partitions) and all(map(key.__eq__, map(_KEY, pairs)))


def _grouped(
    pairs: Sequence[tuple[str, str]],
    partitions: Sequence[int],
    expires_at_ms: Sequence[int],
    prints: list[bytes],
) -> dict[tuple[str, int], tuple[dict[str, bytes], int]]:
    """Each user's fingerprint and the latest expiry, per (alert key, partition)."""
    if _one_group(pairs, partitions):
        users = dict(zip(map(_USER, pairs), prints, strict=True))
        return {(pairs[0][0], partitions[0]): (users, max(expires_at_ms))}
    groups: dict[tuple[str, int], tuple[dict[str, bytes], int]] = {}
    for (alert_key, user), p, expiry, fp in zip(
        pairs, partitions, expires_at_ms, prints, strict=True
    ):
        found, latest = groups.get((alert_key, p), ({}, 0))
        found[user] = fp
        groups[alert_key, p] = (found, max(latest, expiry))
    return groups

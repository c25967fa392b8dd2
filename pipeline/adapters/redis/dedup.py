"""The dedup store on Redis: which users already got an alert's card.

Key layout (``p`` is the configured prefix, ``K`` an alert key ``sender|identifier``):

    p:seen:{K}           SET of users who got K's card; PXAT the latest card's expiry

One set per alert, checked with SMISMEMBER and filled with SADD, a chunk of users per
command; every command names one key, so this works unchanged on Redis Cluster. The ``{K}``
hash tag puts the set in the slot of the alert's other keys
(:mod:`pipeline.adapters.redis.index`).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from pipeline.adapters.redis.client import ALERT_KEYS_GRACE_MS, RedisClient, bulk, guard

_CHUNK = 10_000  # users per SMISMEMBER / SADD command


class RedisDedupStore:
    """:class:`pipeline.domain.ports.DedupStore` on Redis: one set of user ids per alert,
    ``p:seen:{K}``, checked with SMISMEMBER and filled with SADD, a chunk of users per
    command. The set expires (PEXPIREAT, only ever pushed later) with the alert's cards."""

    def __init__(self, client: RedisClient, *, prefix: str) -> None:
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
        replies = iter(await guard("dedup read", lambda: bulk(self._r, commands)))
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
            until = ALERT_KEYS_GRACE_MS + (
                max(expires_at_ms) if len(groups) == 1 else max(expires_at_ms[i] for i in positions)
            )
            commands.append(("PEXPIREAT", key, until, "NX"))
            commands.append(("PEXPIREAT", key, until, "GT"))
        replies = await guard("dedup write", lambda: bulk(self._r, commands))
        return sum(int(replies[i]) for i in adds)

    async def cards_of(self, alert_key: str) -> int:
        return int(await guard("dedup read", lambda: self._r.scard(self._key(alert_key))))


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

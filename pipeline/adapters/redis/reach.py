"""Per-alert reach (:mod:`pipeline.domain.reach`) on Redis, shared by all workers.

Key layout (``p`` is the configured prefix, ``K`` an alert key ``sender|identifier``)::

    p:reach:{K}    HASH  alert_id, status, state, issued_ms, expires_ms   (set on lifecycle)
                         total                 cards confirmed for K, all workers together
                         m:<epoch minute>      cards confirmed in that minute (UTC)
    p:reach        SET   the alert keys that have a reach hash

Every command names one key (Redis-Cluster-safe); an alert's hash expires with the alert
(its ``expires_ms`` plus a grace hour, or
:data:`~pipeline.domain.reach.UNBOUNDED_TTL_MS` when it has none), and snapshot readers
prune registry members whose hash has gone.

Its in-process twin is :class:`pipeline.adapters.memory.reach.MemoryReachStore`; both pass
tests/contract/test_reach_contract.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.adapters.redis.client import RedisClient, guard
from pipeline.domain.reach import (
    MINUTE_MS,
    UNBOUNDED_TTL_MS,
    AlertFacts,
    AlertReach,
    alert_id_of,
    deadline_ms,
    newest_first,
    shown_state,
    windows,
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


class RedisReachStore:
    """:class:`pipeline.domain.ports.ReachStore` on Redis: one hash per alert plus a
    registry set."""

    def __init__(self, client: RedisClient, *, prefix: str) -> None:
        self._r = client
        self._p = prefix

    def _hash(self, key: str) -> str:
        return f"{self._p}:reach:{{{key}}}"

    @property
    def _registry(self) -> str:
        return f"{self._p}:reach"

    async def track(self, facts: AlertFacts) -> None:
        name = self._hash(facts.key)

        async def write() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hset(
                    name,
                    mapping={
                        "alert_id": facts.alert_id,
                        "status": facts.status,
                        "state": facts.state,
                        "expires_ms": "" if facts.expires_ms is None else str(facts.expires_ms),
                    },
                )
                pipe.hsetnx(name, "issued_ms", str(facts.sent_ms))
                pipe.pexpireat(name, deadline_ms(facts.expires_ms, facts.sent_ms))
                pipe.sadd(self._registry, facts.key)
                await pipe.execute()

        await guard("reach track", write)

    async def add_cards(self, counts: Mapping[str, int], at_ms: int) -> dict[str, int]:
        if not counts:
            return {}
        keys = list(counts)
        bucket = f"m:{at_ms // MINUTE_MS}"

        async def write() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    name = self._hash(key)
                    pipe.hincrby(name, "total", counts[key])
                    pipe.hincrby(name, bucket, counts[key])
                    # Untracked alerts (no lifecycle seen) still get a bounded lifetime.
                    pipe.pexpire(name, UNBOUNDED_TTL_MS, nx=True)
                    pipe.sadd(self._registry, key)
                return list(await pipe.execute())

        replies = await guard("reach add", write)
        return {key: int(replies[4 * i]) for i, key in enumerate(keys)}

    async def issued_at(self, key: str) -> int | None:
        raw = await guard("reach read", lambda: self._r.hget(self._hash(key), "issued_ms"))
        return _int_or_none(_text(raw)) if raw is not None else None

    async def snapshot(self, now_ms: int) -> list[AlertReach]:
        members = await guard("reach list", lambda: self._r.smembers(self._registry))
        keys = sorted(_text(m) for m in members)
        if not keys:
            return []

        async def read() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self._hash(key))
                return list(await pipe.execute())

        rows, gone = [], []
        for key, raw in zip(keys, await guard("reach read", read), strict=True):
            if not raw:
                gone.append(key)
                continue
            rows.append(_reach_of(key, {_text(k): _text(v) for k, v in raw.items()}, now_ms))
        if gone:
            await guard("reach prune", lambda: self._r.srem(self._registry, *gone))
        return newest_first(rows)


def _reach_of(key: str, fields: Mapping[str, str], now_ms: int) -> AlertReach:
    """One alert's reach from the fields of its hash."""
    buckets = {int(name[2:]): int(value) for name, value in fields.items() if name.startswith("m:")}
    last_5, last_60, recent = windows(buckets, now_ms)
    expires_ms = _int_or_none(fields.get("expires_ms"))
    return AlertReach(
        key=key,
        alert_id=fields.get("alert_id") or alert_id_of(key),
        status=fields.get("status", ""),
        state=shown_state(fields.get("state", ""), expires_ms, now_ms),
        issued_ms=_int_or_none(fields.get("issued_ms")),
        expires_ms=expires_ms,
        total=int(fields.get("total", 0)),
        last_5m=last_5,
        last_60m=last_60,
        per_minute=recent,
    )

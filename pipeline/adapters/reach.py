"""Per-alert reach: how many people each alert has reached so far, and when.

This is the figure operators and NCMEC ask for ("how many people has the AMBER Alert for
Jane reached, and is it still climbing?"). It is kept in Redis rather than in metric labels:
alert ids are unbounded and do not belong on a Prometheus series.

Key layout (``p`` is the configured prefix, ``K`` an alert key ``sender|identifier``)::

    p:reach:{K}    HASH  alert_id, status, state, issued_ms, expires_ms   (set on lifecycle)
                         total                 cards confirmed for K, all workers together
                         m:<epoch minute>      cards confirmed in that minute (UTC)
    p:reach        SET   the alert keys that have a reach hash

Every command names one key (Redis-Cluster-safe); an alert's hash expires with the alert
(its ``expires_ms`` plus a grace hour, or :data:`UNBOUNDED_TTL_MS` when it has none), and
snapshot readers prune registry members whose hash has gone.

"By area" is not counted: a card does not say which of an alert's areas the user was in
(the cover is one union of cells), so only the alert's total is derivable cheaply.

Both implementations, :class:`RedisReachStore` and its in-process twin
:class:`MemoryReachStore`, satisfy :class:`ReachStore` and pass the same contract test
(tests/contract/test_reach_contract.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from pipeline.adapters.metrics import Metrics
from pipeline.errors import IndexUnavailable, InfrastructureError

log = logging.getLogger(__name__)

T = TypeVar("T")
MINUTE_MS = 60_000
GRACE_MS = 3600 * 1000
UNBOUNDED_TTL_MS = 7 * 24 * 3600 * 1000
WINDOWS_MIN = (5, 60)


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a lifecycle event says about an alert; ``issued_ms`` is kept from the first."""

    key: str
    alert_id: str
    status: str
    state: str
    sent_ms: int
    expires_ms: int | None


@dataclass(frozen=True, slots=True)
class AlertReach:
    """One alert's reach at ``now_ms`` of the snapshot. ``per_minute`` maps the epoch minute
    (UTC) to the cards confirmed in it, for the last 60 minutes, oldest first."""

    key: str
    alert_id: str
    status: str
    state: str
    issued_ms: int | None
    expires_ms: int | None
    total: int
    last_5m: int
    last_60m: int
    per_minute: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "status": self.status,
            "state": self.state,
            "issued_ms": self.issued_ms,
            "expires_ms": self.expires_ms,
            "cards_total": self.total,
            "cards_last_5m": self.last_5m,
            "cards_last_60m": self.last_60m,
            "cards_per_minute": {str(m * 60): n for m, n in self.per_minute.items()},
        }


class ReachStore(Protocol):
    """Per-alert card counters shared by all workers."""

    async def track(self, facts: AlertFacts) -> None:
        """Record an alert's lifecycle: status and state are overwritten, ``issued_ms`` is
        set only the first time, the expiry follows ``facts.expires_ms``. Idempotent."""

    async def add_cards(self, counts: Mapping[str, int], at_ms: int) -> dict[str, int]:
        """Add ``counts[key]`` confirmed cards to each alert at ``at_ms``; returns each
        alert's total after the addition, so ``total == counts[key]`` means this call
        recorded the alert's first cards (across all workers). Not idempotent: call once
        per broker-acknowledged batch."""

    async def issued_at(self, key: str) -> int | None:
        """``issued_ms`` recorded by :meth:`track`, if any."""

    async def snapshot(self, now_ms: int) -> list[AlertReach]:
        """Every alert still remembered, most recently issued first."""


def _windows(buckets: Mapping[int, int], now_ms: int) -> tuple[int, int, dict[int, int]]:
    now_min = now_ms // MINUTE_MS
    recent = {m: buckets[m] for m in range(now_min - 59, now_min + 1) if buckets.get(m)}
    last_5 = sum(n for m, n in recent.items() if m > now_min - WINDOWS_MIN[0])
    return last_5, sum(recent.values()), recent


def _state(stored: str, expires_ms: int | None, now_ms: int) -> str:
    """The state to show: an alert past its expiry reads ``expired`` even before a lifecycle
    ``expired`` event reached the store."""
    if stored in ("issued", "updated") and expires_ms is not None and expires_ms <= now_ms:
        return "expired"
    return stored


def _deadline_ms(expires_ms: int | None, now_ms: int) -> int:
    return expires_ms + GRACE_MS if expires_ms is not None else now_ms + UNBOUNDED_TTL_MS


def _order(rows: list[AlertReach]) -> list[AlertReach]:
    return sorted(rows, key=lambda r: (-(r.issued_ms or 0), r.key))


# -- in-process twin ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Entry:
    facts: AlertFacts | None = None
    issued_ms: int | None = None
    total: int = 0
    buckets: dict[int, int] = field(default_factory=dict)
    deadline_ms: int | None = None


class MemoryReachStore:
    """:class:`ReachStore` in process memory, for the offline replay and unit tests.

    Entries are forgotten at the same deadline as the Redis keys, checked against the
    ``now_ms`` of each call (single process only)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def _live(self, key: str, now_ms: int) -> _Entry:
        entry = self._entries.get(key)
        if entry is None or (entry.deadline_ms is not None and entry.deadline_ms <= now_ms):
            entry = self._entries[key] = _Entry()
        return entry

    async def track(self, facts: AlertFacts) -> None:
        entry = self._live(facts.key, facts.sent_ms)
        entry.facts = facts
        if entry.issued_ms is None:
            entry.issued_ms = facts.sent_ms
        entry.deadline_ms = _deadline_ms(facts.expires_ms, facts.sent_ms)

    async def add_cards(self, counts: Mapping[str, int], at_ms: int) -> dict[str, int]:
        totals: dict[str, int] = {}
        minute = at_ms // MINUTE_MS
        for key, n in counts.items():
            entry = self._live(key, at_ms)
            if entry.deadline_ms is None:
                entry.deadline_ms = at_ms + UNBOUNDED_TTL_MS
            entry.total += n
            entry.buckets[minute] = entry.buckets.get(minute, 0) + n
            totals[key] = entry.total
        return totals

    async def issued_at(self, key: str) -> int | None:
        entry = self._entries.get(key)
        return entry.issued_ms if entry else None

    async def snapshot(self, now_ms: int) -> list[AlertReach]:
        rows = []
        for key, entry in list(self._entries.items()):
            if entry.deadline_ms is not None and entry.deadline_ms <= now_ms:
                del self._entries[key]
                continue
            last_5, last_60, recent = _windows(entry.buckets, now_ms)
            f = entry.facts
            rows.append(
                AlertReach(
                    key=key,
                    alert_id=f.alert_id if f else key.rpartition("|")[2],
                    status=f.status if f else "",
                    state=_state(f.state, f.expires_ms, now_ms) if f else "",
                    issued_ms=entry.issued_ms,
                    expires_ms=f.expires_ms if f else None,
                    total=entry.total,
                    last_5m=last_5,
                    last_60m=last_60,
                    per_minute=recent,
                )
            )
        return _order(rows)


# -- Redis --------------------------------------------------------------------------------------
async def _call(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call, translating client errors into IndexUnavailable."""
    try:
        return await call()
    except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
        raise IndexUnavailable(f"redis error during {what}: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


class RedisReachStore:
    """:class:`ReachStore` on Redis: one hash per alert plus a registry set."""

    def __init__(self, client: Redis | RedisCluster, *, prefix: str) -> None:
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
                pipe.pexpireat(name, _deadline_ms(facts.expires_ms, facts.sent_ms))
                pipe.sadd(self._registry, facts.key)
                await pipe.execute()

        await _call("reach track", write)

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

        replies = await _call("reach add", write)
        return {key: int(replies[4 * i]) for i, key in enumerate(keys)}

    async def issued_at(self, key: str) -> int | None:
        raw = await _call("reach read", lambda: self._r.hget(self._hash(key), "issued_ms"))
        return _int_or_none(_text(raw)) if raw is not None else None

    async def snapshot(self, now_ms: int) -> list[AlertReach]:
        members = await _call("reach list", lambda: self._r.smembers(self._registry))
        keys = sorted(_text(m) for m in members)
        if not keys:
            return []

        async def read() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self._hash(key))
                return list(await pipe.execute())

        rows, gone = [], []
        for key, raw in zip(keys, await _call("reach read", read), strict=True):
            if not raw:
                gone.append(key)
                continue
            fields = {_text(k): _text(v) for k, v in raw.items()}
            buckets = {
                int(name[2:]): int(value) for name, value in fields.items() if name.startswith("m:")
            }
            last_5, last_60, recent = _windows(buckets, now_ms)
            expires_ms = _int_or_none(fields.get("expires_ms"))
            rows.append(
                AlertReach(
                    key=key,
                    alert_id=fields.get("alert_id") or key.rpartition("|")[2],
                    status=fields.get("status", ""),
                    state=_state(fields.get("state", ""), expires_ms, now_ms),
                    issued_ms=_int_or_none(fields.get("issued_ms")),
                    expires_ms=expires_ms,
                    total=int(fields.get("total", 0)),
                    last_5m=last_5,
                    last_60m=last_60,
                    per_minute=recent,
                )
            )
        if gone:
            await _call("reach prune", lambda: self._r.srem(self._registry, *gone))
        return _order(rows)


# -- the runtime's side -------------------------------------------------------------------------
class ReachTracker:
    """Feeds a :class:`ReachStore` from the worker runtime, best effort.

    Reach is a report, not a delivery: a Redis failure here is counted
    (``alertfeed_redis_errors_total``) and logged, and the batch goes on. Retrying would
    either block cards behind a statistic or double-count a half-applied increment.
    The alert's first card (across all workers) is timed into
    ``alertfeed_alert_first_card_seconds`` from the alert's ``sent`` time; the shared total
    decides what is first, so no per-alert state is kept in the process.
    """

    def __init__(self, store: ReachStore, metrics: Metrics) -> None:
        self.store = store
        self._metrics = metrics

    async def on_lifecycle(self, key: str, event: Mapping[str, Any]) -> None:
        """Record a lifecycle event (``schemas/lifecycle.schema.json``) of alert ``key``."""
        facts = AlertFacts(
            key=key,
            alert_id=str(event["alert_id"]),
            status=str(event["status"]),
            state=str(event["state"]),
            sent_ms=int(event["sent_ms"]),
            expires_ms=event.get("expires_ms"),
        )
        try:
            await self.store.track(facts)
        except InfrastructureError as exc:
            self._failed("track", exc)

    async def on_cards(self, pairs: Sequence[tuple[str, str]], at_ms: int) -> None:
        """Count broker-acknowledged cards, one ``(alert_key, user_id)`` pair per card."""
        if not pairs:
            return
        counts = Counter(key for key, _ in pairs)
        try:
            totals = await self.store.add_cards(counts, at_ms)
            for key, total in totals.items():
                if total != counts[key]:
                    continue
                issued = await self.store.issued_at(key)
                if issued is not None:
                    self._metrics.first_card.observe(max(0, at_ms - issued) / 1000)
        except InfrastructureError as exc:
            self._failed("count", exc)

    def _failed(self, what: str, exc: InfrastructureError) -> None:
        self._metrics.redis_errors.inc()
        log.warning("reach %s not recorded dependency=redis error=%s", what, exc)

"""In-process twin of the Redis reach store (:mod:`pipeline.adapters.redis.reach`).

Same contract (tests/contract/test_reach_contract.py runs one suite against both), for the
offline replay and unit tests. Single process only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class _Entry:
    facts: AlertFacts | None = None
    issued_ms: int | None = None
    total: int = 0
    buckets: dict[int, int] = field(default_factory=dict)
    deadline_ms: int | None = None


class MemoryReachStore:
    """:class:`pipeline.domain.ports.ReachStore` in process memory.

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
        entry.deadline_ms = deadline_ms(facts.expires_ms, facts.sent_ms)

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
            last_5, last_60, recent = windows(entry.buckets, now_ms)
            f = entry.facts
            rows.append(
                AlertReach(
                    key=key,
                    alert_id=f.alert_id if f else alert_id_of(key),
                    status=f.status if f else "",
                    state=shown_state(f.state, f.expires_ms, now_ms) if f else "",
                    issued_ms=entry.issued_ms,
                    expires_ms=f.expires_ms if f else None,
                    total=entry.total,
                    last_5m=last_5,
                    last_60m=last_60,
                    per_minute=recent,
                )
            )
        return newest_first(rows)

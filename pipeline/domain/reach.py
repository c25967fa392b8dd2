"""Per-alert reach: how many people each alert has reached so far, and when.

This is the figure operators and NCMEC ask for ("how many people has the AMBER Alert for
Jane reached, and is it still climbing?"). It is kept in a shared store
(:class:`pipeline.domain.ports.ReachStore`) rather than in metric labels: alert ids are
unbounded and do not belong on a Prometheus series.

This module holds the rules every store applies alike: cards are counted per epoch minute
(UTC) and read back over the last :data:`WINDOWS_MIN` minutes; an alert is remembered until
its expiry plus :data:`GRACE_MS` (:data:`UNBOUNDED_TTL_MS` when it has none); an alert past
its expiry reads ``expired``; a snapshot lists the most recently issued first.

"By area" is not counted: a card does not say which of an alert's areas the user was in
(the cover is one union of cells), so only the alert's total is derivable cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


def windows(buckets: Mapping[int, int], now_ms: int) -> tuple[int, int, dict[int, int]]:
    """``(last 5 minutes, last 60 minutes, the last 60 minutes' non-empty buckets)`` of
    ``buckets`` (epoch minute -> cards), the minute of ``now_ms`` included."""
    now_min = now_ms // MINUTE_MS
    recent = {m: buckets[m] for m in range(now_min - 59, now_min + 1) if buckets.get(m)}
    last_5 = sum(n for m, n in recent.items() if m > now_min - WINDOWS_MIN[0])
    return last_5, sum(recent.values()), recent


def shown_state(stored: str, expires_ms: int | None, now_ms: int) -> str:
    """The state to show: an alert past its expiry reads ``expired`` even before a lifecycle
    ``expired`` event reached the store."""
    if stored in ("issued", "updated") and expires_ms is not None and expires_ms <= now_ms:
        return "expired"
    return stored


def deadline_ms(expires_ms: int | None, now_ms: int) -> int:
    """When an alert's reach may be forgotten."""
    return expires_ms + GRACE_MS if expires_ms is not None else now_ms + UNBOUNDED_TTL_MS


def alert_id_of(key: str) -> str:
    """The alert id shown for an alert key (``sender|identifier``) with no recorded facts."""
    return key.rpartition("|")[2]


def newest_first(rows: list[AlertReach]) -> list[AlertReach]:
    """A snapshot's order: the most recently issued first, then by key."""
    return sorted(rows, key=lambda r: (-(r.issued_ms or 0), r.key))

"""The location join: location events in, interstitial cards out.

For a batch of raw location events the :class:`Matcher`

1. validates each event (bad ones become dead letters),
2. maps it to its H3 cell at the index resolution,
3. asks the :class:`CellIndex` which alerts cover those cells (one round trip),
4. keeps the alerts the user may see (status policy, expiry at the event's time),
5. drops pairs already carded, within the batch and per the :class:`DedupStore`,
6. builds the cards.

The caller publishes the cards and, once the broker acknowledged them, calls
:meth:`Matcher.confirm`: a crash in between re-sends a byte-identical card on redelivery
rather than losing it (at-least-once, deduplicated by ``event_id`` downstream).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h3.api.basic_int as h3i

from pipeline.domain.cards import card_expiry_ms, interstitial
from pipeline.domain.deadletter import RawEvent, dead_letter
from pipeline.domain.locations import parse_location
from pipeline.domain.models import Location
from pipeline.domain.policy import AudiencePolicy
from pipeline.domain.ports import CellIndex, DedupStore
from pipeline.errors import BadInput


@dataclass(slots=True)
class MatchResult:
    cards: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    locations: int = 0
    seen_pairs: list[tuple[str, str]] = field(default_factory=list)
    seen_expiry_ms: list[int] = field(default_factory=list)
    duplicates: int = 0


class Matcher:
    def __init__(
        self,
        index: CellIndex,
        dedup: DedupStore,
        policy: AudiencePolicy,
        *,
        resolution: int,
        max_future_skew_ms: int,
        clock_ms: Callable[[], int],
    ) -> None:
        self._index = index
        self._dedup = dedup
        self._policy = policy
        self._resolution = resolution
        self._skew_ms = max_future_skew_ms
        self._clock_ms = clock_ms

    async def match(self, events: Sequence[RawEvent]) -> MatchResult:
        result = MatchResult()
        now = self._clock_ms()
        locations: list[Location] = []
        for raw in events:
            try:
                locations.append(
                    parse_location(raw.value or b"", now_ms=now, max_future_skew_ms=self._skew_ms)
                )
            except BadInput as exc:
                result.dead_letters.append(
                    dead_letter(raw, exc, logical_topic="locations", now_ms=now)
                )
        result.locations = len(locations)
        if not locations:
            return result
        res = self._resolution
        cells = [h3i.latlng_to_cell(loc.lat, loc.lon, res) for loc in locations]
        covering = await self._index.alerts_at(cells)

        candidates: list[tuple[Location, Any]] = []
        in_batch: set[tuple[str, str]] = set()
        for loc, alerts in zip(locations, covering, strict=True):
            for alert in alerts:
                if alert.expires_ms is not None and loc.ts >= alert.expires_ms:
                    continue
                if not self._policy.may_see(alert.status, loc.user_id):
                    continue
                pair = (alert.key, loc.user_id)
                if pair in in_batch:
                    result.duplicates += 1
                    continue
                in_batch.add(pair)
                candidates.append((loc, alert))
        if not candidates:
            return result
        fresh = await self._dedup.unseen([(a.key, loc.user_id) for loc, a in candidates])
        for (loc, alert), is_new in zip(candidates, fresh, strict=True):
            if not is_new:
                result.duplicates += 1
                continue
            result.cards.append(interstitial(alert, loc.user_id, loc.ts))
            result.seen_pairs.append((alert.key, loc.user_id))
            result.seen_expiry_ms.append(card_expiry_ms(alert, loc.ts))
        return result

    async def confirm(self, result: MatchResult) -> None:
        """Record the result's cards as delivered. Call only after the broker acknowledged them."""
        if result.seen_pairs:
            await self._dedup.mark_seen(result.seen_pairs, result.seen_expiry_ms)

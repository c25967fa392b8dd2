"""The location join: location events in, interstitial cards out.

For a batch of raw location events the :class:`Matcher`

1. validates each event (bad ones become dead letters; ones older than the freshness
   window are ignored and counted: that user's location is no longer known),
2. maps it to its H3 cell at the index resolution and records it in the presence store,
3. asks the :class:`CellIndex` which alerts cover those cells (one round trip, at the same
   time as the presence writes),
4. keeps the alerts the user may see (status policy, expiry at the event's time),
5. drops pairs already carded, within the batch and per the :class:`DedupStore`,
6. builds the cards.

:meth:`Matcher.fan_out` serves the other direction: when an alert is issued or its area
grows, it cards the users already inside, by their last known location, without waiting
for their next location event.

:meth:`Matcher.match` is the two halves of the join in turn: :meth:`Matcher.locate` (steps
1 to 3: no decision about any card yet) and :meth:`Matcher.card` (steps 4 to 6). A worker
may locate one batch while it cards the one before, provided it cards them in the order it
located them.

The caller publishes the cards and, once the broker acknowledged them, calls
:meth:`Matcher.confirm` (until then the pairs are pending in the matcher, and no later batch
cards them again): a crash in between re-sends a byte-identical card on redelivery
rather than losing it (at-least-once, deduplicated by ``event_id`` downstream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, le
from typing import Any

import h3.api.basic_int as h3i

from pipeline.domain.models import Sighting
from pipeline.domain.ports import CellIndex, Concurrently, DedupStore, PresenceStore, in_turn
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.cards import ActiveAlert, CardTemplate, card_expiry_ms
from pipeline.domain.targeting.deadletter import dead_letter
from pipeline.domain.targeting.locations import (
    RawLocations,
    parse_location,
    parse_locations,
    sightings_of,
)
from pipeline.domain.targeting.policy import AudiencePolicy
from pipeline.errors import BadInput


@dataclass(slots=True)
class MatchResult:
    """What one batch produced. ``cards`` are encoded interstitials, ``(key, value)`` as
    they go to Kafka; ``card_created_ms``, ``seen_pairs`` and ``seen_expiry_ms`` run
    parallel to them."""

    cards: list[tuple[bytes, bytes]] = field(default_factory=list)
    card_created_ms: list[int] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    locations: int = 0
    seen_pairs: list[tuple[str, str]] = field(default_factory=list)
    seen_expiry_ms: list[int] = field(default_factory=list)
    duplicates: int = 0
    stale: int = 0
    fan_out_of: str | None = None  # the alert key, for a chunk of a fan-out


@dataclass(slots=True)
class Located:
    """A batch after :meth:`Matcher.locate`: its counts and dead letters, and each fresh
    sighting with the alerts covering its cell."""

    result: MatchResult
    sightings: list[Sighting] = field(default_factory=list)
    covering: list[Sequence[ActiveAlert]] = field(default_factory=list)


class Matcher:
    def __init__(
        self,
        index: CellIndex,
        dedup: DedupStore,
        policy: AudiencePolicy,
        *,
        presence: PresenceStore,
        resolution: int,
        max_future_skew_ms: int,
        freshness_ms: int,
        clock_ms: Callable[[], int],
        concurrently: Concurrently | None = None,
    ) -> None:
        self._index = index
        self._concurrently: Concurrently = concurrently or in_turn
        self._dedup = dedup
        self._presence = presence
        self._freshness_ms = freshness_ms
        self._templates: dict[tuple[str, int], CardTemplate] = {}
        # Cards recorded by the fan-out in progress, per alert (see fan_out).
        self._fanned: dict[str, list[int]] = {}
        # Pairs carded by a location batch whose cards are not yet recorded (acknowledged
        # and confirmed): the next batch is carded meanwhile. At most a few batches' cards.
        self._pending: set[tuple[str, str]] = set()
        self._policy = policy
        self._resolution = resolution
        self._skew_ms = max_future_skew_ms
        self._clock_ms = clock_ms

    async def match(self, events: Sequence[RawEvent]) -> MatchResult:
        """The whole join of one batch: :meth:`locate`, then :meth:`card`."""
        return await self.card(await self.locate(events))

    async def locate(self, events: Sequence[RawEvent]) -> Located:
        """Parse, place and record a batch, and find the alerts over each sighting."""
        result = MatchResult()
        located = Located(result)
        now = self._clock_ms()
        skew = self._skew_ms
        # The whole batch at once, column by column, when every event has the common shape.
        if isinstance(events, RawLocations):
            values = events.values
        else:
            values = list(map(attrgetter("value"), events))
        columns = parse_locations(values, now_ms=now, max_future_skew_ms=skew)
        if columns is None:  # some event is unusual or bad: one by one, dead-lettering
            columns = ([], [], [], [])
            users, lats, lons, times = columns
            for raw in events:
                try:
                    loc = parse_location(raw.value or b"", now_ms=now, max_future_skew_ms=skew)
                except BadInput as exc:
                    result.dead_letters.append(
                        dead_letter(raw, exc, logical_topic="locations", now_ms=now)
                    )
                    continue
                users.append(loc.user_id)
                lats.append(loc.lat)
                lons.append(loc.lon)
                times.append(loc.ts)
        users, lats, lons, times = columns
        oldest = now - self._freshness_ms
        if times and min(times) < oldest:  # older than the window: ignored, counted
            fresh = list(map(le, repeat(oldest), times))
            result.stale = fresh.count(False)
            users, lats = list(compress(users, fresh)), list(compress(lats, fresh))
            lons, times = list(compress(lons, fresh)), list(compress(times, fresh))
        result.locations = len(users)
        if not users:
            return located
        cells = list(map(h3i.latlng_to_cell, lats, lons, repeat(self._resolution)))
        located.sightings = sightings_of(users, cells, times)
        # Independent round trips (the index's version check, the presence writes): the
        # worker sends them at once (see Concurrently).
        covering, _ = await self._concurrently(
            self._index.alerts_at(cells), self._presence.record(located.sightings)
        )
        located.covering = covering
        return located

    async def card(self, located: Located) -> MatchResult:
        """The cards of a located batch: the pairs its user may see, not yet carded. A new
        result each call, so that a call retried after an outage counts nothing twice.
        Its pairs are pending until :meth:`confirm` (or :meth:`release`): a later call, or
        a fan-out, leaves them out meanwhile, so the next batch may be carded while this
        one's cards wait for the broker."""
        done, covering = located.result, located.covering
        result = MatchResult(
            dead_letters=list(done.dead_letters), locations=done.locations, stale=done.stale
        )
        # Only the sightings under some alert can make a card (an empty list is false).
        await self._card(result, compress(zip(located.sightings, covering, strict=True), covering))
        self._pending.update(result.seen_pairs)
        return result

    def release(self, result: MatchResult) -> None:
        """Forget ``result``'s cards as pending (after :meth:`confirm`, or when they will
        not be confirmed: the batch failed and is carded again)."""
        self._pending.difference_update(result.seen_pairs)

    async def fan_out(
        self, alert: ActiveAlert, cover: frozenset[int]
    ) -> AsyncIterator[MatchResult]:
        """Cards, chunk by chunk, for the users whose last known location, fresh within the
        window, lies in ``cover``. Created at the alert's version time, so a repeat is
        byte-identical. Publish and confirm each chunk before asking for the next."""
        since = self._clock_ms() - self._freshness_ms
        created = alert.version
        if alert.expires_ms is not None and created >= alert.expires_ms:
            return
        template = self._template(alert)
        expiry = card_expiry_ms(alert, created)
        key, status, may_see = alert.key, alert.status, self._policy.may_see
        everyone = self._policy.public(status)
        fanned = self._fanned[key] = [0]  # this fan-out's own, even if an older one lingers
        try:
            async for present in self._presence.present_in(cover, since):
                result = MatchResult(locations=len(present), fan_out_of=key)
                users = present if everyone else [u for u in present if may_see(status, u)]
                # Carded by a location batch, not yet recorded: left out.
                pending = {user for alert_key, user in self._pending if alert_key == key}
                if pending:
                    users = [u for u in users if u not in pending]
                # While every recorded card of the alert is one this fan-out recorded (a
                # freshly issued alert) and none is pending, its users cannot have one: skip
                # the per-user check.
                if pending or await self._dedup.cards_of(key) != fanned[0]:
                    new = list(compress(users, await self._dedup.unseen([(key, u) for u in users])))
                else:
                    new = users
                result.duplicates = len(users) - len(new)
                result.cards = template.records(new, created)
                result.card_created_ms = [created] * len(new)
                result.seen_pairs = [(key, u) for u in new]
                result.seen_expiry_ms = [expiry] * len(new)
                yield result
        finally:
            if self._fanned.get(key) is fanned:
                del self._fanned[key]

    async def _card(
        self, result: MatchResult, hits: Iterable[tuple[Sighting, Sequence[ActiveAlert]]]
    ) -> None:
        candidates: list[tuple[Sighting, ActiveAlert]] = []
        in_batch: set[tuple[str, str]] = set()
        # Checked before the store: a pending pair leaves the set once recorded there.
        pending = self._pending
        for sighting, alerts in hits:
            for alert in alerts:
                if alert.expires_ms is not None and sighting.ts >= alert.expires_ms:
                    continue
                if not self._policy.may_see(alert.status, sighting.user_id):
                    continue
                pair = (alert.key, sighting.user_id)
                if pair in in_batch or pair in pending:
                    result.duplicates += 1
                    continue
                in_batch.add(pair)
                candidates.append((sighting, alert))
        if not candidates:
            return
        fresh = await self._dedup.unseen([(a.key, s.user_id) for s, a in candidates])
        for (sighting, alert), is_new in zip(candidates, fresh, strict=True):
            if not is_new:
                result.duplicates += 1
                continue
            user = sighting.user_id
            result.cards.append((user.encode(), self._template(alert).encode(user, sighting.ts)))
            result.card_created_ms.append(sighting.ts)
            result.seen_pairs.append((alert.key, user))
            result.seen_expiry_ms.append(card_expiry_ms(alert, sighting.ts))

    def _template(self, alert: ActiveAlert) -> CardTemplate:
        key = (alert.key, alert.version)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) > 1024:  # bounded: a few alerts are active at a time
                self._templates.clear()
            template = self._templates[key] = CardTemplate(alert)
        return template

    async def confirm(self, result: MatchResult) -> None:
        """Record the result's cards as delivered. Call only after the broker acknowledged them."""
        if result.seen_pairs:
            added = await self._dedup.mark_seen(result.seen_pairs, result.seen_expiry_ms)
            fanned = self._fanned.get(result.fan_out_of or "")
            if fanned is not None:
                fanned[0] += added
            self.release(result)

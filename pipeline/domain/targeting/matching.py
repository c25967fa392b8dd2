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
from itertools import compress, groupby, repeat
from operator import attrgetter, itemgetter, le
from typing import Any

import h3.api.basic_int as h3i

from pipeline.domain.models import Sighting
from pipeline.domain.ports import CellIndex, Concurrently, DedupStore, PresenceStore, in_turn
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.cards import (
    ActiveAlert,
    CardTemplate,
    card_digest,
    card_expiry_ms,
)
from pipeline.domain.targeting.deadletter import dead_letter
from pipeline.domain.targeting.locations import (
    RawLocations,
    parse_location,
    parse_locations,
    sightings_of,
)
from pipeline.domain.targeting.policy import AudiencePolicy
from pipeline.errors import BadInput

_ALERT_KEY, _USER_ID = itemgetter(0), itemgetter(1)  # of a (alert key, user id) pair


@dataclass(slots=True)
class MatchResult:
    """What one batch produced. ``cards`` are encoded interstitials, ``(key, value)`` as
    they go to Kafka; ``card_created_ms``, ``seen_pairs``, ``seen_partitions``,
    ``seen_expiry_ms`` and ``seen_digests`` (each card's ``card_digest``) run parallel to
    them."""

    cards: list[tuple[bytes, bytes]] = field(default_factory=list)
    card_created_ms: list[int] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    locations: int = 0
    seen_pairs: list[tuple[str, str]] = field(default_factory=list)
    seen_partitions: list[int] = field(default_factory=list)  # each user's partition
    seen_expiry_ms: list[int] = field(default_factory=list)
    seen_digests: list[bytes] = field(default_factory=list)
    duplicates: int = 0
    stale: int = 0


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
        fanout_chunk: int = 10_000,
    ) -> None:
        self._index = index
        self._fanout_chunk = fanout_chunk
        self._concurrently: Concurrently = concurrently or in_turn
        self._dedup = dedup
        self._presence = presence
        self._freshness_ms = freshness_ms
        self._templates: dict[tuple[str, int], CardTemplate] = {}
        # Per alert, the users carded by a location batch or a fan-out chunk whose cards
        # are not yet recorded (acknowledged and confirmed): the next batch or chunk is
        # carded meanwhile. At most a few batches' or chunks' cards.
        self._pending: dict[str, set[str]] = {}
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
            values, partitions = events.values, events.partitions
        else:
            values = list(map(attrgetter("value"), events))
            partitions = list(map(attrgetter("partition"), events))
        columns = parse_locations(values, now_ms=now, max_future_skew_ms=skew)
        if columns is None:  # some event is unusual or bad: one by one, dead-lettering
            columns = ([], [], [], [])
            users, lats, lons, times = columns
            partitions = []
            for raw in events:
                try:
                    loc = parse_location(raw.value or b"", now_ms=now, max_future_skew_ms=skew)
                except BadInput as exc:
                    result.dead_letters.append(
                        dead_letter(raw, exc, logical_topic="locations", now_ms=now)
                    )
                    continue
                users.append(loc.user_id)
                partitions.append(raw.partition)
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
            partitions = list(compress(partitions, fresh))
        result.locations = len(users)
        if not users:
            return located
        cells = list(map(h3i.latlng_to_cell, lats, lons, repeat(self._resolution)))
        located.sightings = sightings_of(users, cells, times, partitions)
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
        self._hold(result)
        return result

    def _hold(self, result: MatchResult) -> None:
        pending = self._pending
        for alert_key, pairs in groupby(result.seen_pairs, _ALERT_KEY):
            users = pending.get(alert_key)
            if users is None:
                users = pending[alert_key] = set()
            users.update(map(_USER_ID, pairs))

    def release(self, result: MatchResult) -> None:
        """Forget ``result``'s cards as pending (after :meth:`confirm`, or when they will
        not be confirmed: the batch failed and is carded again)."""
        pending = self._pending
        for alert_key, pairs in groupby(result.seen_pairs, _ALERT_KEY):
            users = pending.get(alert_key)
            if users is not None:
                users.difference_update(map(_USER_ID, pairs))
                if not users:
                    del pending[alert_key]

    async def fan_out(
        self, alert: ActiveAlert, cover: frozenset[int], partition: int | None
    ) -> AsyncIterator[MatchResult]:
        """Cards, chunk by chunk, for the users of ``partition`` of the locations topic
        (None: of every partition, for stores that keep none apart) whose last known
        location, fresh within the window, lies in ``cover``. Created at the alert's
        version time, so a repeat is byte-identical. Each chunk's pairs are pending until
        confirmed or released, as a location batch's are."""
        since = self._clock_ms() - self._freshness_ms
        created = alert.version
        if alert.expires_ms is not None and created >= alert.expires_ms:
            return
        template = self._template(alert)
        expiry = card_expiry_ms(alert, created)
        key, status, may_see = alert.key, alert.status, self._policy.may_see
        everyone = self._policy.public(status)
        owned = None if partition is None else frozenset((partition,))
        recorded_as = 0 if partition is None else partition
        async for present in self._presence.present_in(cover, since, owned, self._fanout_chunk):
            result = MatchResult(locations=len(present))
            # A user met twice (moving while the store was read) is carded once.
            users = list(dict.fromkeys(present))
            if not everyone:
                users = [u for u in users if may_see(status, u)]
            # Carded by a location batch or the chunk before, not yet recorded: left out.
            pending = self._pending.get(key)
            if pending and not pending.isdisjoint(users):
                users = [u for u in users if u not in pending]
            partitions = [recorded_as] * len(users)
            digests = template.digests(users)
            pairs = list(zip(repeat(key), users))
            fresh = await self._dedup.unseen(pairs, partitions, digests)
            new, digests = list(compress(users, fresh)), list(compress(digests, fresh))
            result.duplicates = len(users) - len(new)
            result.cards = template.records(new, created, digests)
            result.card_created_ms = [created] * len(new)
            result.seen_pairs = list(compress(pairs, fresh))
            result.seen_partitions = [recorded_as] * len(new)
            result.seen_expiry_ms = [expiry] * len(new)
            result.seen_digests = digests
            self._hold(result)
            yield result

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
                if pair in in_batch or sighting.user_id in pending.get(alert.key, ()):
                    result.duplicates += 1
                    continue
                in_batch.add(pair)
                candidates.append((sighting, alert))
        if not candidates:
            return
        # Not hashed for the check: most candidates under an alert are users it already
        # carded, which the store tells apart without (the new cards are hashed below).
        fresh = await self._dedup.unseen(
            [(a.key, s.user_id) for s, a in candidates], [s.partition for s, _ in candidates]
        )
        for (sighting, alert), is_new in zip(candidates, fresh, strict=True):
            if not is_new:
                result.duplicates += 1
                continue
            user = sighting.user_id
            digest = card_digest(alert.key, user)
            card = self._template(alert).encode(user, sighting.ts, digest)
            result.cards.append((user.encode(), card))
            result.seen_digests.append(digest)
            result.card_created_ms.append(sighting.ts)
            result.seen_pairs.append((alert.key, user))
            result.seen_partitions.append(sighting.partition)
            result.seen_expiry_ms.append(card_expiry_ms(alert, sighting.ts))

    def _template(self, alert: ActiveAlert) -> CardTemplate:
        key = (alert.key, alert.version)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) > 1024:  # bounded: a few alerts are active at a time
                self._templates.clear()
            template = self._templates[key] = CardTemplate(alert)
        return template

    def own(self, partitions: frozenset[int]) -> None:
        """The partitions of the locations topic this worker owns from now on."""
        self._dedup.own(partitions)

    async def fanned_out(self, alert: ActiveAlert) -> frozenset[int]:
        """The partitions whose fan-out of ``alert`` (at its version) finished."""
        return await self._dedup.fanned_out(alert.key, alert.version)

    async def fan_out_finished(self, alert: ActiveAlert, partition: int) -> None:
        """Record that the fan-out of ``alert`` over ``partition`` finished (its cards all
        confirmed)."""
        keep_until = card_expiry_ms(alert, alert.version)
        await self._dedup.mark_fanned_out(alert.key, alert.version, [partition], keep_until)

    async def confirm(self, result: MatchResult) -> None:
        """Record the result's cards as delivered. Call only after the broker acknowledged them."""
        if result.seen_pairs:
            await self._dedup.mark_seen(
                result.seen_pairs,
                result.seen_partitions,
                result.seen_expiry_ms,
                result.seen_digests,
            )
            self.release(result)

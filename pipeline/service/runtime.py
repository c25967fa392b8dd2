"""What a worker does with each consumed batch, independent of Faust's plumbing.

The Faust agents hand raw batches here. Bad input is dead-lettered and counted; an
infrastructure failure (Redis or Kafka down) is retried with capped exponential backoff
for as long as it takes. The batch is not acknowledged meanwhile, so consumption stops:
that is the backpressure, and nothing is dropped.

Per-message isolation: any other exception while one message is handled is that
message's, never its batch's. An alert message is handled alone anyway; a location batch
that raises is handled again one event at a time, so that only the event that raises is
dead-lettered (reason class ``internal``, logged at ERROR) and the others go through. What
still escapes these methods is a bug outside any one message: the caller (the Faust app)
then ends the worker process without committing, and its partitions are redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson

from pipeline.adapters.metrics import Metrics
from pipeline.domain.lifecycle import AlertIngest, PreparedAlert
from pipeline.domain.ports import Sink
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.deadletter import dead_letter
from pipeline.domain.targeting.matching import Matcher, MatchResult
from pipeline.errors import (
    BadInput,
    IndexNotBuilt,
    IndexUnavailable,
    InfrastructureError,
    InternalFailure,
)
from pipeline.service.fanout import PresenceFanOut
from pipeline.service.reach import ReachTracker

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
# Parse, admit and cover one alerts-topic message (CPU-bound; raises BadInput).
Prepare = Callable[[bytes], Awaitable[list[PreparedAlert]]]


async def at_once(first: Awaitable[A], second: Awaitable[B], /) -> tuple[A, B]:
    """:class:`pipeline.domain.ports.Concurrently` on the event loop: both steps run at
    once; the first failure is raised once both have finished."""
    one, two = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(one, BaseException):
        raise one
    if isinstance(two, BaseException):
        raise two
    return one, two


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkerRuntime:
    """The application service: what the Faust app (pipeline.adapters.faust.app) and the
    offline replay (pipeline.entrypoints.replay) both drive, batch by batch.

    The pacing keywords are settings (pipeline.settings.MatchSettings, same defaults):
    ``max_backoff_s`` is ``retry_max_backoff_s``, ``fanout_hold_chunks`` and
    ``fanout_retry_s`` have their names there, ``fanout_recheck_s`` is ``index_recheck_s``."""

    def __init__(
        self,
        matcher: Matcher,
        ingest: AlertIngest,
        metrics: Metrics,
        sink: Sink,
        *,
        clock_ms: Callable[[], int] = now_ms,
        max_backoff_s: float = 30.0,
        reach: ReachTracker | None = None,
        alert_log: Callable[[], list[RawEvent]] | None = None,
        prepare: Prepare | None = None,
        fanout_hold_chunks: int = 10,
        fanout_retry_s: float = 1.0,
        fanout_recheck_s: float = 5.0,
        partitions: frozenset[int] | None = None,
        fan_out_inline: bool = True,
    ) -> None:
        self.clock_ms = clock_ms
        # Off the event loop: a child process under a CPU budget in the worker
        # (pipeline.adapters.preparation), a thread by default.
        self._prepare = prepare or self._prepare_in_thread
        # Reads the whole alerts topic (blocking); None: the index cannot be rebuilt here.
        self._alert_log = alert_log
        self._rebuilding = asyncio.Lock()
        # Checking dedup, publishing and recording the cards is one step: a location batch
        # and a fan-out chunk must not interleave in it, or both could card the same user.
        # Across workers the same race leaves a duplicate with the same event_id.
        self._carding = asyncio.Lock()
        # Locating a batch (parse, cells, index lookup, presence write) is the step before;
        # its own lock keeps batches in order through it (see _match).
        self._locating = asyncio.Lock()
        self.matcher = matcher
        self.ingest = ingest
        self.metrics = metrics
        self.sink = sink
        self._max_backoff_s = max_backoff_s
        self.reach = reach
        # False: the fan-outs run on their own task (fan_outs.run, the worker's), which an
        # install only wakes, so that the alerts agent takes the next message (a Cancel)
        # meanwhile. True: an install runs them before it returns (the offline replay).
        self._fan_out_inline = fan_out_inline
        self.fan_outs = PresenceFanOut(
            matcher,
            ingest.index,
            metrics,
            carding=self._carding,
            retrying=self._retrying,
            publish=self._publish,
            hold_chunks=fanout_hold_chunks,
            retry_s=fanout_retry_s,
            recheck_s=fanout_recheck_s,
            partitions=partitions,
        )
        # Cover size per alert installed by this worker (alertfeed_cover_cells); bounded by
        # the number of active alerts, pruned in refresh_gauges.
        self._cover_cells: dict[str, int] = {}

    # -- locations -------------------------------------------------------------------------
    async def on_locations(self, batch: Sequence[RawEvent]) -> None:
        m = self.metrics
        m.events_in.labels("locations").inc(len(batch))
        m.batch_size.labels("locations").observe(len(batch))
        with m.batch_duration.labels("locations").time():
            try:
                await self._match(batch)  # outages are retried inside, step by step
            except Exception as exc:
                log.error(
                    "location batch failed, retrying it event by event error_type=%s size=%d",
                    type(exc).__name__,
                    len(batch),
                )
                await self._match_one_by_one(batch)

    async def _match_one_by_one(self, batch: Sequence[RawEvent]) -> None:
        """Each event of a batch that raised, alone: the ones that raise again are
        dead-lettered as ``internal``; cards already published for the batch are published
        again byte-identical (they were not yet recorded), which consumers dedupe."""
        for raw in batch:
            try:
                await self._match([raw])
            except Exception as exc:
                # Location messages carry user ids and coordinates: the exception's text
                # (which may quote them) goes onto the dead letter only, not into the log.
                log.error(
                    "location event dead-lettered topic=%s partition=%d offset=%d "
                    "reason_class=internal error_type=%s",
                    raw.topic,
                    raw.partition,
                    raw.offset,
                    type(exc).__name__,
                )
                await self._reject(raw, InternalFailure.of(exc), "locations")

    async def _match(self, batch: Sequence[RawEvent]) -> None:
        """Locate the batch, then card it, then publish its cards. Locating and carding
        each hold their own lock, and each is retried through an outage while holding it,
        so batches pass both steps in the order they arrived: the next batch is located
        (parsed, placed, its presence recorded) while this one is carded, yet no user's
        older sighting overwrites a newer one. The cards are published after the carding
        lock is released: their pairs stay pending in the matcher until recorded, so the
        next batch is carded while the broker acknowledges this one's, without carding
        them again."""
        started = time.perf_counter()
        async with self._locating:
            located = await self._retrying("locate", lambda: self.matcher.locate(batch))
        async with self._carding:
            result = await self._retrying("card", lambda: self.matcher.card(located))
        try:
            self.metrics.redis_latency.observe(time.perf_counter() - started)
            if result.stale:
                self.metrics.locations_ignored.labels("stale").inc(result.stale)
            await self._retrying(
                "publish", lambda: self._publish(result, triggered_by_location=True)
            )
        finally:
            self.matcher.release(result)  # confirmed, or carded again by the caller

    async def _publish(self, result: MatchResult, *, triggered_by_location: bool = False) -> None:
        """Publish a result's cards and dead letters, wait for the broker's acks, then
        record the cards as delivered (a crash in between re-sends identical cards)."""
        dead = [self._dead_letter_record(d) for d in result.dead_letters]
        await self._delivered(self.sink.publish("interstitials", result.cards))
        acked = self.clock_ms()  # the cards are on the topic, for the rankers to read
        await self._delivered(self.sink.publish("dlq", dead))
        await self.matcher.confirm(result)
        if self.reach is not None:
            await self.reach.on_cards(result.seen_pairs, self.clock_ms())
        if triggered_by_location:
            for created in result.card_created_ms:
                self.metrics.e2e_latency.observe(max(0, acked - created) / 1000)
        self.metrics.events_out.labels("interstitials").inc(len(result.cards))
        self.metrics.dedup_hits.inc(result.duplicates)
        if result.cards:
            log.debug("cards emitted count=%d", len(result.cards))

    # -- alerts ----------------------------------------------------------------------------
    async def on_alerts(self, batch: Sequence[RawEvent]) -> None:
        self.metrics.events_in.labels("alerts").inc(len(batch))
        for raw in batch:
            try:
                await self._ingest(raw)
            except BadInput as exc:
                log_at = logging.ERROR if isinstance(exc, InternalFailure) else logging.WARNING
                log.log(
                    log_at,
                    "alert rejected topic=%s partition=%d offset=%d reason_class=%s reason=%s",
                    raw.topic,
                    raw.partition,
                    raw.offset,
                    exc.reason_class,
                    exc,
                )
                await self._reject(raw, exc, "alerts")

    async def _ingest(self, raw: RawEvent) -> None:
        """Prepare and install one alerts-topic message. Raises BadInput for a message
        that cannot be used, InternalFailure for one whose handling raised anything else;
        infrastructure failures are retried here until they pass."""
        try:
            for item in await self._prepared(raw):
                await self._install(item)
        except BadInput:
            raise
        except Exception as exc:
            raise InternalFailure.of(exc) from exc

    async def _prepared(self, raw: RawEvent) -> list[PreparedAlert]:
        started = time.perf_counter()
        self.metrics.alerts_preparing.inc()
        try:
            return await self._retrying(
                "alert preparation", lambda: self._prepare(raw.value or b"")
            )
        finally:
            self.metrics.alerts_preparing.dec()
            self.metrics.expansion_duration.observe(time.perf_counter() - started)

    async def _prepare_in_thread(self, data: bytes) -> list[PreparedAlert]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.ingest.prepare, data)

    async def _reject(self, raw: RawEvent, exc: BadInput, logical_topic: str) -> None:
        """Dead-letter one message with its original bytes and the reason."""
        record = dead_letter(raw, exc, logical_topic=logical_topic, now_ms=self.clock_ms())
        await self._retrying("dead-letter", lambda: self._dead_letter_now(record))

    async def _install(self, item: PreparedAlert) -> None:
        """Apply one prepared message, announce what changed and fan it out. Each step is
        retried through an outage on its own: applying a message the index already holds
        changes nothing and reports nothing, so retrying the apply together with a failed
        announcement would lose the announcement and the fan-out."""
        applied = await self._retrying("alert install", lambda: self.ingest.apply(item))
        if item.cover is not None:
            for geocode in item.cover.unresolved:
                self.metrics.unresolved_geocodes.labels(geocode.name.upper()[:16]).inc()
        if applied is None:
            return
        event = applied.lifecycle
        await self._retrying("alert announce", lambda: self._announce(event))
        if event["state"] in ("issued", "updated"):
            self._cover_cells[item.key] = int(event["cells"])
        else:
            self._cover_cells.pop(item.key, None)
        if self.reach is not None:
            await self.reach.on_lifecycle(item.key, event)
        log.info(
            "alert %s status=%s msg_type=%s cells=%d unresolved=%d",
            event["state"],
            event["status"],
            item.alert.msg_type,
            event["cells"],
            len(event["unresolved"]),
        )
        await self._retrying("gauges", self.refresh_gauges)
        if applied.alert is not None:
            # This worker's own partitions at once; every other worker's follow within
            # its fan-out poll.
            if self._fan_out_inline:
                await self.fan_out_due()
            else:
                self.fan_outs.wake()
        # Only now is the event no longer owed: a worker that dies before this line leaves
        # it owed, and the redelivered message announces it again.
        await self._retrying("alert announced", lambda: self.ingest.announced(applied))

    async def _announce(self, event: dict[str, Any]) -> None:
        record = (event["alert_id"].encode(), orjson.dumps(event))
        await self._delivered(self.sink.publish("lifecycle", [record]))
        self.metrics.lifecycle.labels(event["state"]).inc()
        self.metrics.events_out.labels("lifecycle").inc()

    # -- fan-out -------------------------------------------------------------------------
    def own(self, partitions: frozenset[int]) -> None:
        """The partitions of the locations topic this worker owns from now on."""
        self.fan_outs.own(partitions)

    async def fan_out_due(self) -> None:
        """Every due fan-out of this worker's partitions (:class:`PresenceFanOut`)."""
        await self.fan_outs.due()

    async def on_tick(self) -> None:
        """Periodic work: expire alerts whose time has come (event: ``expired``)."""
        for event in await self._retrying("expiry", self.ingest.expire_due):
            await self._retrying("expiry announce", lambda e=event: self._announce(e))  # type: ignore[misc]
            log.info("alert expired status=%s", event["status"])

    async def rebuild_index(self) -> None:
        """Rebuild the index from the alerts topic (the source of truth) when it lost its
        contents. Matching waits meanwhile: the caller's batch is retried afterwards."""
        async with self._rebuilding:
            if await self.ingest.index.is_built():
                return
            if self._alert_log is None:
                await self.ingest.index.mark_built()
                return
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            messages = await loop.run_in_executor(None, self._alert_log)
            installed = 0
            for raw in messages:
                try:
                    prepared = await self._prepare(raw.value or b"")
                    for item in prepared:
                        await self.ingest.apply(item, replay=True)
                        installed += 1
                except InfrastructureError:
                    raise
                except BadInput:
                    continue  # dead-lettered when it was first consumed
                except Exception as exc:
                    # Dead-lettered as internal when it was first consumed: one such message
                    # must not fail every rebuild, and with it all matching.
                    log.error(
                        "alert message passed over in the rebuild topic=%s partition=%d "
                        "offset=%d error_type=%s",
                        raw.topic,
                        raw.partition,
                        raw.offset,
                        type(exc).__name__,
                    )
            await self.ingest.index.mark_built()
            self.metrics.index_rebuilds.inc()
            log.warning(
                "index rebuilt from the alerts topic messages=%d applied=%d seconds=%.1f",
                len(messages),
                installed,
                time.perf_counter() - started,
            )

    async def refresh_gauges(self) -> None:
        """Re-read the index into the active-alert and cover gauges (also run on a timer).
        An alert past its expiry no longer counts as active, though its record lingers."""
        now = self.clock_ms()
        alerts = [
            a
            for a in await self.ingest.index.active_alerts()
            if a.expires_ms is None or a.expires_ms > now
        ]
        self.metrics.active_alerts.clear()
        for status in ("Actual", "Exercise", "Test"):
            self.metrics.active_alerts.labels(status).set(0)
        for alert in alerts:
            self.metrics.active_alerts.labels(alert.status).inc()
        live = {a.key for a in alerts}
        for key in [k for k in self._cover_cells if k not in live]:
            del self._cover_cells[key]
        self.metrics.cover_cells.set(sum(self._cover_cells.values()))

    # -- plumbing --------------------------------------------------------------------------
    def _dead_letter_record(self, record: dict[str, Any]) -> tuple[bytes, bytes]:
        src = record["source"]
        self.metrics.dead_lettered.labels(src["logical_topic"], record["reason_class"]).inc()
        self.metrics.events_out.labels("dlq").inc()
        key = f"{src['topic']}:{src['partition']}:{src['offset']}"
        return key.encode(), orjson.dumps(record)

    async def _dead_letter_now(self, record: dict[str, Any]) -> None:
        await self._delivered(self.sink.publish("dlq", [self._dead_letter_record(record)]))

    async def _delivered(self, publishing: Awaitable[None]) -> None:
        # The sink raises BrokerUnavailable for the broker's failures; anything else is a bug
        # and must not be retried as "Kafka down".
        await publishing

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        delay = min(0.1, self._max_backoff_s)
        while True:
            try:
                try:
                    return await step()
                except IndexNotBuilt:
                    log.warning(
                        "%s found the index empty; rebuilding it from the alerts topic", what
                    )
                # An outage while rebuilding (reading the alerts topic, writing the index) is
                # retried like the step's own, never taken for a fault of the caller's batch.
                await self.rebuild_index()
            except InfrastructureError as exc:
                dependency = "redis" if isinstance(exc, IndexUnavailable) else "kafka"
                if dependency == "redis":
                    self.metrics.redis_errors.inc()
                self.metrics.infra_retries.labels(dependency).inc()
                log.warning(
                    "%s failed, retrying in %.1fs dependency=%s error=%s",
                    what,
                    delay,
                    dependency,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)

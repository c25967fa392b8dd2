"""What a worker does with each consumed batch, independent of Faust's plumbing.

The Faust agents hand raw batches here. Bad input is dead-lettered and counted; an
infrastructure failure (Redis or Kafka down) is retried with capped exponential backoff
for as long as it takes. The batch is not acknowledged meanwhile, so consumption stops:
that is the backpressure, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

import orjson

from pipeline.adapters.metrics import Metrics
from pipeline.domain.deadletter import RawEvent, dead_letter
from pipeline.domain.ingest import AlertIngest, PreparedAlert
from pipeline.domain.matching import Matcher
from pipeline.errors import BadInput, BrokerUnavailable, IndexUnavailable, InfrastructureError

log = logging.getLogger(__name__)

T = TypeVar("T")
OutTopic = Literal["interstitials", "lifecycle", "dlq"]


class Sink(Protocol):
    """Publishes to a logical output topic; the returned awaitable resolves on broker ack."""

    async def send(self, topic: OutTopic, key: bytes, value: bytes) -> Awaitable[Any]: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkerRuntime:
    def __init__(
        self,
        matcher: Matcher,
        ingest: AlertIngest,
        metrics: Metrics,
        sink: Sink,
        *,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.matcher = matcher
        self.ingest = ingest
        self.metrics = metrics
        self.sink = sink
        self._max_backoff_s = max_backoff_s

    # -- locations -------------------------------------------------------------------------
    async def on_locations(self, batch: Sequence[RawEvent]) -> None:
        m = self.metrics
        m.events_in.labels("locations").inc(len(batch))
        m.batch_size.labels("locations").observe(len(batch))
        with m.batch_duration.labels("locations").time():
            await self._retrying("match", lambda: self._match(batch))

    async def _match(self, batch: Sequence[RawEvent]) -> None:
        started = time.perf_counter()
        result = await self.matcher.match(batch)
        self.metrics.redis_latency.observe(time.perf_counter() - started)
        pending = [
            await self.sink.send("interstitials", card["user_id"].encode(), orjson.dumps(card))
            for card in result.cards
        ]
        pending += [await self._send_dead_letter(d) for d in result.dead_letters]
        await self._delivered(pending)
        await self.matcher.confirm(result)
        done = now_ms()
        for card in result.cards:
            self.metrics.e2e_latency.observe(max(0, done - card["created_ms"]) / 1000)
        self.metrics.events_out.labels("interstitials").inc(len(result.cards))
        self.metrics.dedup_hits.inc(result.duplicates)
        if result.cards:
            log.debug("cards emitted count=%d", len(result.cards))

    # -- alerts ----------------------------------------------------------------------------
    async def on_alerts(self, batch: Sequence[RawEvent]) -> None:
        self.metrics.events_in.labels("alerts").inc(len(batch))
        loop = asyncio.get_running_loop()
        for raw in batch:
            started = time.perf_counter()
            try:
                # Parsing and covering are CPU-bound (seconds for a state): off the loop.
                prepared = await loop.run_in_executor(None, self.ingest.prepare, raw.value or b"")
            except BadInput as exc:
                log.warning(
                    "alert rejected topic=%s partition=%d offset=%d reason_class=%s reason=%s",
                    raw.topic,
                    raw.partition,
                    raw.offset,
                    exc.reason_class,
                    exc,
                )
                record = dead_letter(raw, exc, logical_topic="alerts", now_ms=now_ms())
                await self._retrying("dead-letter", lambda r=record: self._dead_letter_now(r))  # type: ignore[misc]
                continue
            finally:
                self.metrics.expansion_duration.observe(time.perf_counter() - started)
            for item in prepared:
                await self._retrying("alert install", lambda i=item: self._install(i))  # type: ignore[misc]

    async def _install(self, item: PreparedAlert) -> None:
        event = await self.ingest.apply(item)
        if item.cover is not None:
            for geocode in item.cover.unresolved:
                self.metrics.unresolved_geocodes.labels(geocode.name.upper()[:16]).inc()
        if event is None:
            return
        ack = await self.sink.send("lifecycle", event["alert_id"].encode(), orjson.dumps(event))
        await self._delivered([ack])
        self.metrics.lifecycle.labels(event["state"]).inc()
        self.metrics.events_out.labels("lifecycle").inc()
        log.info(
            "alert %s status=%s msg_type=%s cells=%d unresolved=%d",
            event["state"],
            event["status"],
            item.alert.msg_type,
            event["cells"],
            len(event["unresolved"]),
        )
        await self.refresh_gauges()

    async def refresh_gauges(self) -> None:
        alerts = await self.ingest.index.active_alerts()
        self.metrics.active_alerts.clear()
        for alert in alerts:
            self.metrics.active_alerts.labels(alert.status).inc()

    # -- plumbing --------------------------------------------------------------------------
    async def _send_dead_letter(self, record: dict[str, Any]) -> Awaitable[Any]:
        source = record["source"]["logical_topic"]
        self.metrics.dead_lettered.labels(source, record["reason_class"]).inc()
        self.metrics.events_out.labels("dlq").inc()
        src = record["source"]
        key = f"{src['topic']}:{src['partition']}:{src['offset']}"
        return await self.sink.send("dlq", key.encode(), orjson.dumps(record))

    async def _dead_letter_now(self, record: dict[str, Any]) -> None:
        await self._delivered([await self._send_dead_letter(record)])

    async def _delivered(self, pending: Sequence[Awaitable[Any]]) -> None:
        if not pending:
            return
        try:
            await asyncio.gather(*pending)
        except InfrastructureError:
            raise
        except Exception as exc:  # the Kafka client's own errors
            raise BrokerUnavailable(f"produce not acknowledged: {exc!r}") from exc

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                return await step()
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

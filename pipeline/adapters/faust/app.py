"""The Faust app: two agents, a few lines each, and the worker's HTTP endpoints.

Topics are raw bytes both ways: the runtime parses them itself so that a malformed event
can be dead-lettered with its exact original bytes.

What Faust does per consumed message (several tasks and loop turns, an event, an ack),
not the handler, bounds the worker's throughput: tests/bench/bench_live.py measures the
worker beside this same app with a handler that does nothing. :class:`RawSchema` and
:class:`LeanMonitor` trim the per-message work that buys this worker nothing.

At least once: an agent acks a batch's events only after the runtime returned, i.e. after
the batch's cards were acknowledged by Kafka and recorded (see :func:`acknowledge`).

Crash-only: the runtime contains every failure of one message (dead letter) and retries
every infrastructure failure. Anything that still escapes an agent or a timer is a bug
outside any one message, and :func:`crash` ends the process at once, before Faust's
supervisor could restart the agent in place over the batch it was handling (the restarted
agent would ack later offsets, and their commit would skip that batch). Nothing more is
committed; the partitions go to the restarted worker or a peer, which handles the batch
again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from time import monotonic
from typing import Any, NoReturn

import faust
from faust.sensors.monitor import Monitor
from faust.serializers.schemas import DecodeFunction
from faust.types import TP, AppT, EventT, Message, StreamT
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.adapters.kafka.lag import GroupOffsets
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.locations import RawLocations
from pipeline.errors import InfrastructureError
from pipeline.service.runtime import WorkerRuntime, now_ms
from pipeline.settings import Settings

log = logging.getLogger(__name__)
EXIT_CRASHED = 70  # EX_SOFTWARE: the supervisor (k8s, systemd, a test) restarts the worker


def crash(where: str, exc: BaseException) -> NoReturn:
    """End the worker process now, committing nothing more (see the module docstring).

    The log line names the exception's type and where it was raised, not its text: that
    may quote a user id or coordinates."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.critical(
        "worker crashed, exiting without committing where=%s error_type=%s\n%s",
        where,
        type(exc).__name__,
        frames,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CRASHED)


def crash_only(where: str, step: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``step`` for a Faust timer, ending the process on any exception it lets through."""

    async def run() -> None:
        try:
            await step()
        except Exception as exc:
            crash(where, exc)

    return run


class RawSchema(faust.Schema[bytes | None, bytes | None]):
    """Keys and values as the bytes on the wire, straight into Faust's event. Faust's own
    ``raw`` codec returns them unchanged too, but through its serializer registry: some
    5 µs a message, on the path every consumed message takes."""

    def compile(self, app: AppT, **_: Any) -> DecodeFunction:
        create_event = app.create_event

        async def decode(message: Message, *, propagate: bool = False) -> EventT[Any]:
            return create_event(message.key, message.value, message.headers, message)

        return decode


class LeanMonitor(Monitor):
    """Faust's monitor without its per-message bookkeeping (counters, timings and a dict
    per event, about 4 µs a message), which only Faust's own /stats pages would show: the
    worker's metrics are in pipeline.adapters.metrics. Kept: the time each partition last
    reached its stream, which Faust's consumer reads to log a stream that stopped."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
    ) -> dict[str, Any] | None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[str, Any] | None = None,
    ) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass


def location_batch(topic: str, events: Sequence[Any]) -> RawLocations:
    """A batch of the locations topic as columns: the matcher reads the values as they
    are, and builds a :class:`RawEvent` only for an event it dead-letters."""
    msgs = [event.message for event in events]
    return RawLocations(
        topic,
        [m.partition for m in msgs],
        [m.offset for m in msgs],
        [int(m.timestamp * 1000) for m in msgs],
        [m.key for m in msgs],
        [m.value for m in msgs],
    )


def raw_event(event: Any) -> RawEvent:
    msg = event.message
    return RawEvent(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=int(msg.timestamp * 1000),
        key=msg.key,
        value=msg.value,
    )


async def acknowledge(stream: Any, events: Sequence[Any]) -> None:
    """Ack a batch's events once the runtime is done with them; Faust commits only acked
    offsets. The agents take batches with ``noack_take``, not ``take_events``: the latter
    acks a batch also when the agent's body is cancelled, as Faust does to stop a worker,
    so a SIGTERM while a batch retried against a failed dependency committed that batch
    unprocessed. Now such a batch is consumed again by the next worker."""
    for event in events:
        await stream.ack(event)


async def consumer_lag(
    consumer: Any, logical: Mapping[str, str], offsets: GroupOffsets, timeout_s: float
) -> dict[str, int]:
    """Messages between the end of each assigned partition and the group's committed
    offset there (this worker's fetch position where the group has committed none), summed
    per logical topic.

    Public API only: Faust's consumer gives ``assignment()``, ``highwaters()`` (a broker
    ListOffsets request, so a consumer stuck behind backpressure still sees the log grow)
    and ``position()``; the committed offsets come from the broker through confluent-kafka's
    AdminClient (:class:`~pipeline.adapters.kafka.lag.GroupOffsets`)."""
    tps = [tp for tp in consumer.assignment() if tp.topic in logical]
    lag = dict.fromkeys(logical.values(), 0)
    if not tps:
        return lag
    ends = await asyncio.wait_for(consumer.highwaters(*tps), timeout=timeout_s)
    committed = await offsets.committed([(tp.topic, tp.partition) for tp in tps], timeout_s)
    for tp in tps:
        end = ends.get(tp)
        done = committed.get((tp.topic, tp.partition))
        if done is None:
            done = await consumer.position(tp)
        if end is not None and done is not None:
            lag[logical[tp.topic]] += max(0, int(end) - int(done))
    return lag


def create_app(settings: Settings, runtime: WorkerRuntime) -> faust.App:
    """Build the app whose agents hand their batches to ``runtime``. Faust only consumes;
    the runtime's sink produces (librdkafka, see pipeline.adapters.kafka.sink)."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers],
        broker_client_id=settings.kafka.client_id,
        store="memory://",
        datadir=settings.data_dir,
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.metrics.host,
        web_port=settings.metrics.port,
        stream_wait_empty=False,
        broker_commit_interval=settings.kafka.commit_interval_s,
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.session_timeout_s / 5,
        loghandlers=[],
        Monitor=LeanMonitor,
    )
    _add_agents(app, settings, runtime)
    _add_timers(app, settings, runtime)
    _add_pages(app, runtime)
    return app


def _add_agents(app: faust.App, settings: Settings, runtime: WorkerRuntime) -> None:
    """The two agents: locations to matches, alerts to the index. Their bodies end the
    process on anything the runtime lets through, before Faust sees it: Faust's own
    agent-error handler commits the consumer's offsets, then restarts the agent in place."""
    t, match = settings.topics, settings.match

    def raw_topic(name: str) -> Any:
        return app.topic(name, schema=RawSchema(key_serializer="raw", value_serializer="raw"))

    @app.agent(raw_topic(t.locations), name="alertfeed.match-locations")
    async def match_locations(stream: Any) -> None:
        try:
            async for events in stream.noack_take(match.batch_size, within=match.batch_within_s):
                await runtime.on_locations(location_batch(t.locations, events))
                await acknowledge(stream, events)
        except Exception as exc:
            crash("agent match-locations", exc)

    @app.agent(raw_topic(t.alerts), name="alertfeed.ingest-alerts")
    async def ingest_alerts(stream: Any) -> None:
        try:
            batches = stream.noack_take(match.alert_batch_size, within=match.alert_batch_within_s)
            async for events in batches:
                await runtime.on_alerts([raw_event(e) for e in events])
                await acknowledge(stream, events)
        except Exception as exc:
            crash("agent ingest-alerts", exc)


def _add_timers(app: faust.App, settings: Settings, runtime: WorkerRuntime) -> None:
    """The gauges (index and consumer lag) and the expiry of alerts, each on its interval."""
    interval_s = settings.metrics.gauge_interval_s
    consumed = {settings.topics.alerts: "alerts", settings.topics.locations: "locations"}
    offsets = GroupOffsets(settings, group_id=app.conf.id)  # Faust's consumer group

    async def refresh_gauges() -> None:
        try:
            await runtime.refresh_gauges()
        except InfrastructureError as exc:
            runtime.metrics.redis_errors.inc()
            log.warning("gauge refresh failed dependency=redis error=%s", exc)
        try:
            lag = await consumer_lag(app.consumer, consumed, offsets, interval_s)
        except Exception as exc:  # not yet assigned, or the broker is away: keep last values
            log.debug("consumer lag not sampled error=%r", exc)
            return
        for topic, messages in lag.items():
            runtime.metrics.consumer_lag.labels(topic).set(messages)

    app.timer(interval_s, name="alertfeed.gauges")(crash_only("gauges", refresh_gauges))
    app.timer(settings.match.expiry_check_s, name="alertfeed.expiry")(
        crash_only("expiry", runtime.on_tick)
    )


def _add_pages(app: faust.App, runtime: WorkerRuntime) -> None:
    """The HTTP endpoints (/metrics, /alerts/reach, /healthz, /ready) and the readiness
    they report: ready from the end of a rebalance until partitions are revoked."""

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(
            runtime.metrics.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    @app.page("/alerts/reach")
    async def alerts_reach(web: Any, request: Any) -> Any:
        if runtime.reach is None:
            return web.json({"alerts": []})
        try:
            rows = await runtime.reach.store.snapshot(now_ms())
        except InfrastructureError as exc:
            return web.json({"error": str(exc)}, status=503)
        return web.json({"alerts": [row.to_json() for row in rows]})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"ok": True})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        is_ready = runtime.metrics.is_ready
        return web.json({"ready": is_ready}, status=200 if is_ready else 503)

    # faust's signal stubs type receivers as taking a ``signal`` keyword; ours take **kwargs.
    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalanced(sender: Any, **kwargs: Any) -> None:
        runtime.metrics.set_ready(True)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        runtime.metrics.set_ready(False)

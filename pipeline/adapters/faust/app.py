"""The Faust app: the alerts agent, the timers, the worker's HTTP endpoints, and the
location join (pipeline.adapters.faust.join), a service of the app that feeds the runtime
whole batches of the locations topic straight from librdkafka.

Topics are raw bytes both ways: the runtime parses them itself so that a malformed event
can be dead-lettered with its exact original bytes. :class:`RawSchema` and
:class:`LeanMonitor` trim Faust's per-message work that buys the alerts agent nothing.

At least once: the alerts agent acks a batch's events only after the runtime returned,
i.e. after their lifecycle events and cards were acknowledged by Kafka and recorded (see
:func:`acknowledge`); the location join commits on the same rule.

Crash-only (pipeline.adapters.faust.crash): the agent's body, the timers and the join end
the process on anything the runtime lets through, before Faust's supervisor could restart
an agent in place over the batch it skipped.

Ready (``/ready``) once both consumer groups have given this worker its partitions (Faust's
for the alerts, the join's for the locations), until either takes them away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from time import monotonic
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.serializers.schemas import DecodeFunction
from faust.types import TP, AppT, EventT, Message, StreamT
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.adapters.faust.crash import crash, crash_only
from pipeline.adapters.faust.join import add_location_join
from pipeline.adapters.kafka.batches import BatchConsumer
from pipeline.adapters.kafka.lag import GroupOffsets
from pipeline.adapters.metrics import Metrics
from pipeline.domain.records import RawEvent
from pipeline.errors import InfrastructureError
from pipeline.service.runtime import WorkerRuntime, now_ms
from pipeline.settings import Settings

log = logging.getLogger(__name__)


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
    """Messages between the end of each partition Faust assigned this worker and the
    group's committed offset there (this worker's fetch position where the group has
    committed none), summed per logical topic.

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


async def join_lag(
    topic: str, owned: frozenset[int], offsets: GroupOffsets, timeout_s: float
) -> int:
    """The same for the location join's partitions: the end of each minus the group's
    commit there (the whole partition where it has none yet), all through the AdminClient."""
    parts = [(topic, p) for p in sorted(owned)]
    if not parts:
        return 0
    ends = await offsets.ends(parts, timeout_s)
    committed = await offsets.committed(parts, timeout_s)
    return sum(max(0, end - (committed.get(tp) or 0)) for tp, end in ends.items())


class Readiness:
    """Ready while both consumer groups have this worker's assignment: Faust's (a
    rebalance completed, no revoke since) and the location join's (it was assigned)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.alerts_assigned = False
        self.locations: frozenset[int] | None = None  # owned partitions, once assigned

    def faust_rebalanced(self, done: bool) -> None:
        self.alerts_assigned = done
        self._publish()

    def locations_assigned(self, owned: frozenset[int]) -> None:
        self.locations = owned
        self._publish()

    def _publish(self) -> None:
        self._metrics.set_ready(self.alerts_assigned and self.locations is not None)


def create_app(settings: Settings, runtime: WorkerRuntime) -> faust.App:
    """Build the app whose agent and join service hand their batches to ``runtime``. Faust
    only consumes; the runtime's sink produces (librdkafka, see pipeline.adapters.kafka.sink)."""
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
    readiness = Readiness(runtime.metrics)
    runtime.own(frozenset())  # nothing until the location consumer is assigned partitions

    def assigned(owned: frozenset[int]) -> None:
        runtime.own(owned)
        readiness.locations_assigned(owned)

    _add_agents(app, settings, runtime)
    join = add_location_join(app, settings, runtime, assigned)
    _add_timers(app, settings, runtime, join, readiness)
    _add_pages(app, runtime, readiness)
    return app


def _add_agents(app: faust.App, settings: Settings, runtime: WorkerRuntime) -> None:
    """The alerts agent: alerts to the index. Its body ends the process on anything the
    runtime lets through, before Faust sees it: Faust's own agent-error handler commits
    the consumer's offsets, then restarts the agent in place."""
    t, match = settings.topics, settings.match

    def raw_topic(name: str) -> Any:
        return app.topic(name, schema=RawSchema(key_serializer="raw", value_serializer="raw"))

    @app.agent(raw_topic(t.alerts), name="alertfeed.ingest-alerts")
    async def ingest_alerts(stream: Any) -> None:
        try:
            batches = stream.noack_take(match.alert_batch_size, within=match.alert_batch_within_s)
            async for events in batches:
                await runtime.on_alerts([raw_event(e) for e in events])
                await acknowledge(stream, events)
        except Exception as exc:
            crash("agent ingest-alerts", exc)


def _add_timers(
    app: faust.App,
    settings: Settings,
    runtime: WorkerRuntime,
    join: BatchConsumer,
    readiness: Readiness,
) -> None:
    """The gauges (index and consumer lag), the expiry of alerts and the fan-outs due,
    each on its interval."""
    interval_s = settings.metrics.gauge_interval_s
    consumed = {settings.topics.alerts: "alerts"}
    offsets = GroupOffsets(settings, group_id=app.conf.id)  # Faust's consumer group
    join_offsets = GroupOffsets(settings, group_id=join.group_id)

    async def refresh_gauges() -> None:
        try:
            await runtime.refresh_gauges()
        except InfrastructureError as exc:
            runtime.metrics.redis_errors.inc()
            log.warning("gauge refresh failed dependency=redis error=%s", exc)
        try:
            lag = await consumer_lag(app.consumer, consumed, offsets, interval_s)
            owned = readiness.locations or frozenset()
            lag["locations"] = await join_lag(join.topic, owned, join_offsets, interval_s)
        except Exception as exc:  # not yet assigned, or the broker is away: keep last values
            log.debug("consumer lag not sampled error=%r", exc)
            return
        for topic, messages in lag.items():
            runtime.metrics.consumer_lag.labels(topic).set(messages)

    app.timer(interval_s, name="alertfeed.gauges")(crash_only("gauges", refresh_gauges))
    app.timer(settings.match.expiry_check_s, name="alertfeed.expiry")(
        crash_only("expiry", runtime.on_tick)
    )
    # Each worker fans every new alert out over its own partitions, on a task of its own.
    fan_outs = runtime.fan_outs

    async def fan_out_forever() -> None:
        await fan_outs.run(settings.match.fanout_poll_s)

    app.task(crash_only("fan-out", fan_out_forever))


def _add_pages(app: faust.App, runtime: WorkerRuntime, readiness: Readiness) -> None:
    """The HTTP endpoints (/metrics, /alerts/reach, /healthz, /ready) and the readiness
    they report."""

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
        readiness.faust_rebalanced(True)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        readiness.faust_rebalanced(False)

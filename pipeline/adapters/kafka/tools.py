"""confluent-kafka tools: topic creation, a delivery-checked producer, and the alert-log reader.

Used by the CLI (publish, replay, demo) and by the worker's start-up; the CLI's other
consumers are in :mod:`pipeline.adapters.kafka.consumer`. The Faust worker itself consumes
through Faust.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.adapters.kafka.consumer import consumed_record
from pipeline.domain.records import RawEvent
from pipeline.errors import BrokerUnavailable
from pipeline.settings import Settings

log = logging.getLogger(__name__)


# A dead letter carries its message base64-encoded (4/3 of it) plus the reason: an input
# record at the broker's default 1 MB limit must still fit, or dead-lettering it would
# fail for ever and hold its partition up.
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The topics alertfeed needs, with their configuration.

    The alerts topic is the source of truth for the index: compacted and keyed by alert,
    so a rebuild reads every alert's latest message. Others are time-retained streams.
    """
    t = settings.topics
    rf = t.replication_factor
    week = str(7 * 24 * 3600 * 1000)
    return [
        NewTopic(
            t.alerts,
            t.partitions,
            rf,
            config={"cleanup.policy": "compact", "min.compaction.lag.ms": week},
        ),
        NewTopic(t.locations, t.partitions, rf, config={"retention.ms": str(24 * 3600 * 1000)}),
        NewTopic(t.interstitials, t.partitions, rf, config={"retention.ms": week}),
        NewTopic(t.lifecycle, t.partitions, rf, config={"retention.ms": week}),
        NewTopic(
            t.dlq,
            t.partitions,
            rf,
            config={
                "retention.ms": str(30 * 24 * 3600 * 1000),
                "max.message.bytes": str(DEAD_LETTER_MAX_BYTES),
            },
        ),
    ]


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics; returns the names created. Raises BrokerUnavailable."""
    admin = AdminClient(dict(settings.kafka.confluent_config()))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot list topics: {exc}") from exc
    wanted = [spec for spec in topic_specs(settings) if spec.topic not in existing]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BrokerUnavailable(f"cannot create topic {name}: {exc}") from exc
    log.info("created topics count=%d", len(created))
    return created


# Every producer of ours: acknowledged by all in-sync replicas, no duplicates on retry, and
# Java's key partitioner (murmur2), so a user's records land on the partition a Java or
# Kafka Streams producer would choose (librdkafka's own default hashes differently).
PRODUCER_DEFAULTS: dict[str, str | int | float | bool] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",
}


class DeliveryProducer:
    """A producer that knows which records the broker acknowledged.

    ``flush()`` raises BrokerUnavailable if any record could not be delivered, so a caller
    never believes something reached Kafka that did not.
    """

    def __init__(self, settings: Settings, **extra: str | int) -> None:
        config: dict[str, str | int | float | bool] = {
            **settings.kafka.confluent_config(),
            **PRODUCER_DEFAULTS,
            **extra,
        }
        self._producer = Producer(config)
        self._failures: list[str] = []
        self.delivered = 0

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failures.append(str(err))
        else:
            self.delivered += 1

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers) if headers else None,
                    timestamp=timestamp_ms or 0,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # backpressure: local queue full
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> int:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise BrokerUnavailable(f"{remaining} records not delivered within {timeout_s:.0f}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise BrokerUnavailable(f"{len(failures)} records failed: {failures[0]}")
        return self.delivered


def read_alert_log(settings: Settings, timeout_s: float = 120.0) -> list[RawEvent]:
    """Every message of the alerts topic up to its current end, partition by partition,
    for rebuilding the index. Commits nothing. Raises BrokerUnavailable."""
    topic = settings.topics.alerts
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"{settings.app_id}-rebuild",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise BrokerUnavailable(f"alerts topic {topic} is not available")
        deadline = time.monotonic() + timeout_s
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for partition in meta.topics[topic].partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, partition), deadline)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        consumer.assign(starts)
        out: list[RawEvent] = []
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            record = consumed_record(msg)
            out.append(record)
            if record.offset + 1 >= ends.get(record.partition, 0):
                ends.pop(record.partition, None)
        if ends:
            raise BrokerUnavailable(f"alerts topic not read to its end within {timeout_s:.0f}s")
        return out
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read the alerts topic: {exc}") from exc
    finally:
        consumer.close()


# A partition whose leader is being elected (just created, or a broker restarting).
_LEADER_MOVING = frozenset(
    (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    )
)


def _watermarks(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """``(low, high)`` of ``tp``, asked again while the broker answers with a retriable
    error (a topic just created has no leader for a moment) until ``deadline``."""
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _LEADER_MOVING
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)

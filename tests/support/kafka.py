"""Producing to and reading from the real broker in tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.adapters.kafka.consumer import consumed_record
from pipeline.adapters.kafka.tools import DeliveryProducer
from pipeline.domain.records import RawEvent
from pipeline.settings import Settings


def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = DeliveryProducer(settings)
    for key, value in records:
        producer.send(topic, value, key=key)
    return producer.flush()


def produce_json(settings: Settings, topic: str, items: Iterable[tuple[str, object]]) -> int:
    return produce(settings, topic, ((k.encode(), orjson.dumps(v)) for k, v in items))


def collect(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[RawEvent]], bool] = lambda _: False,
    timeout_s: float = 60.0,
    settle_s: float = 3.0,
) -> list[RawEvent]:
    """Every record of ``topic`` from the beginning: reads until ``until(records)`` holds and
    then ``settle_s`` more seconds (to catch extras that must not be there), or ``timeout_s``."""
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"test-collect-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[RawEvent] = []
    deadline = time.monotonic() + timeout_s
    satisfied_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if now > deadline or (satisfied_at is not None and now - satisfied_at >= settle_s):
                return records
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                records.append(consumed_record(msg))
            if satisfied_at is None and until(records):
                satisfied_at = time.monotonic()
    finally:
        consumer.close()


def values(records: Iterable[RawEvent]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.value is not None]


def read_to_end(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[RawEvent]:
    """Every record of ``topic`` from the beginning up to the end each partition has now,
    by a plain consumer of its own (no group, nothing committed). Raises AssertionError if
    that end is not reached within ``timeout_s``."""
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"test-read-{time.time_ns()}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        left = {p for p, end in ends.items() if end > 0}
        out: list[RawEvent] = []
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                out.append(consumed_record(msg))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    left.discard(msg.partition())
        assert not left, f"{topic} not read to its end"
        return out
    finally:
        consumer.close()

"""The worker's Kafka output, on the real broker: a batch resolves once all of it is
acknowledged, and each user's cards land on the partition a Java client would choose."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import murmur2  # an implementation independent of librdkafka

from pipeline.adapters.kafka.sink import ConfluentSink
from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import Settings
from tests.support.kafka import collect


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's DefaultPartitioner for a keyed record: toPositive(murmur2(key)) % n."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.integration
def test_cards_are_all_acknowledged_and_partitioned_by_user_as_java_does(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    records = [(f"user-{i}".encode(), b'{"n":%d}' % i) for i in range(3000)]
    sink = ConfluentSink(settings)
    try:
        asyncio.run(sink.publish("interstitials", records))
    finally:
        sink.close()
    got = collect(
        settings,
        settings.topics.interstitials,
        until=lambda rs: len(rs) >= len(records),
        settle_s=1.0,
    )
    assert sorted((r.key, r.value) for r in got) == sorted(records)
    partitions = settings.topics.partitions
    assert {r.partition for r in got} == set(range(partitions))
    wrong = [r.key for r in got if r.key and r.partition != java_partition(r.key, partitions)]
    assert not wrong

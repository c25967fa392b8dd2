"""The consumer group's committed offsets, read from the real broker through the public
AdminClient (what the worker's consumer-lag gauge subtracts from the end of the log)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.adapters.kafka.lag import GroupOffsets
from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import Settings


@pytest.mark.integration
def test_a_groups_commits_are_read_back_and_a_partition_without_one_reads_none(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    topic = settings.topics.locations
    group = f"{settings.app_id}-lag"
    consumer = Consumer(
        {**settings.kafka.confluent_config(), "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 42)], asynchronous=False)
    finally:
        consumer.close()

    offsets = GroupOffsets(settings, group)
    committed = asyncio.run(offsets.committed([(topic, 0), (topic, 1)], timeout_s=10))
    assert committed == {(topic, 0): 42, (topic, 1): None}
    assert asyncio.run(GroupOffsets(settings).committed([(topic, 0)], timeout_s=10)) == {
        (topic, 0): None  # the worker's own group (the app id) has committed nothing yet
    }

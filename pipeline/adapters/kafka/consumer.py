"""confluent-kafka consumers of the CLI's tools, and the one conversion of a consumed message.

* :func:`consumed_record`: a confluent-kafka message as a :class:`RawEvent`, for every
  consumer of ours outside Faust (the recorder, the alert-log reader, the demo, the tests);
* :class:`PartitionReader`: every partition of some topics from chosen start positions,
  outside any consumer group's offsets (``alertfeed record``);
* :class:`TopicReader`: one topic from its beginning, in a group of its own that commits
  nothing (``alertfeed demo``).

Both readers raise BrokerUnavailable when the broker fails, never a confluent-kafka error.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from pipeline.domain.records import RawEvent
from pipeline.errors import BrokerUnavailable, ConfigurationError
from pipeline.settings import Settings


def consumed_record(msg: Any) -> RawEvent:
    """A consumed confluent-kafka message (not an error) as a RawEvent, bytes and headers
    exactly as they came (a header's value may be None)."""
    return RawEvent(
        topic=str(msg.topic()),
        partition=int(msg.partition()),
        offset=int(msg.offset()),
        timestamp_ms=int(msg.timestamp()[1]),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
    )


class PartitionReader:
    """Reads every partition of ``topics`` (real names): from the start with
    ``from_beginning``, else from the first record at or after ``since_ms``, else from the
    end (only what arrives from now on). Assigns the partitions itself, so no consumer
    group offsets are read or committed.

    :attr:`at_end` tells, for each partition once :meth:`assign` returned, whether the last
    :meth:`poll` found it read to its end. Use as a context manager, or :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        *,
        from_beginning: bool = False,
        since_ms: int | None = None,
    ) -> None:
        self._topics = topics
        self._from_beginning = from_beginning
        self._since_ms = since_ms
        self._consumer = Consumer(
            {
                **settings.kafka.confluent_config(),
                "group.id": f"alertfeed-record-{time.time_ns()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        self.at_end: dict[tuple[str, int], bool] = {}

    def assign(self) -> None:
        """Find the partitions and their start offsets, and start reading them. Raises
        ConfigurationError for a topic that does not exist, BrokerUnavailable."""
        partitions = self._start_positions()
        self._consumer.assign(partitions)
        self.at_end = dict.fromkeys(((p.topic, p.partition) for p in partitions), False)

    def poll(self, timeout_s: float) -> RawEvent | None:
        """The next record, or None if none came within ``timeout_s`` (or a partition was
        found at its end). Raises BrokerUnavailable."""
        msg = self._consumer.poll(timeout_s)
        if msg is None:
            return None
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self.at_end[(str(msg.topic()), int(msg.partition() or 0))] = True
                return None
            raise BrokerUnavailable(f"consume failed: {error}")
        record = consumed_record(msg)
        self.at_end[(record.topic, record.partition)] = False
        return record

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> PartitionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_positions(self) -> list[TopicPartition]:
        consumer = self._consumer
        partitions: list[TopicPartition] = []
        try:
            for topic in self._topics:
                meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if meta is None or meta.error is not None or not meta.partitions:
                    raise ConfigurationError(f"topic {topic!r} does not exist")
                for number in sorted(meta.partitions):
                    start = OFFSET_BEGINNING if self._from_beginning else OFFSET_END
                    partitions.append(TopicPartition(topic, number, start))
            if self._since_ms is not None and not self._from_beginning:
                since = self._since_ms
                wanted = [TopicPartition(p.topic, p.partition, since) for p in partitions]
                found = consumer.offsets_for_times(wanted, timeout=10)
                partitions = [
                    TopicPartition(p.topic, p.partition, p.offset if p.offset >= 0 else OFFSET_END)
                    for p in found
                ]
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read topic metadata: {exc}") from exc
        return partitions


class TopicReader:
    """Reads one topic from its beginning, in a consumer group of its own (named
    ``<group_prefix>-<nanoseconds>``) that commits nothing. Use as a context manager, or
    :meth:`close`."""

    def __init__(self, settings: Settings, topic: str, *, group_prefix: str) -> None:
        self._consumer = Consumer(
            {
                **settings.kafka.confluent_config(),
                "group.id": f"{group_prefix}-{time.time_ns()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])

    def poll(self, timeout_s: float) -> RawEvent | None:
        """The next record, or None if none came within ``timeout_s`` (or the consumer
        reported an error, which it retries by itself)."""
        msg = self._consumer.poll(timeout_s)
        if msg is None or msg.error():
            return None
        return consumed_record(msg)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

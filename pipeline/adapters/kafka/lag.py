"""A consumer group's committed offsets, read through confluent-kafka's public AdminClient.

The worker's consumer lag (``alertfeed_consumer_lag_messages``) is, per assigned
partition, the end of the log minus the group's committed offset. Faust keeps the offsets
it committed only in a private map of its consumer; the broker holds the same offsets and
answers an OffsetFetch for any group, so they are read from there
(``AdminClient.list_consumer_group_offsets``), without joining the group. The ends of the
locations topic's partitions, which the worker's own librdkafka consumer owns, come from
the same AdminClient (``list_offsets``), so that no other thread calls that consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from pipeline.errors import BrokerUnavailable
from pipeline.settings import Settings


class GroupOffsets:
    """The committed offsets of consumer group ``group_id`` (the Faust app's id, which is
    its consumer group, by default)."""

    def __init__(self, settings: Settings, group_id: str | None = None) -> None:
        self.group_id = group_id or settings.app_id
        self._admin = AdminClient(dict(settings.kafka.confluent_config()))

    async def committed(
        self, partitions: Iterable[tuple[str, int]], timeout_s: float
    ) -> dict[tuple[str, int], int | None]:
        """For each ``(topic, partition)``, the group's committed offset (the offset of the
        next message to consume), or None where the group has committed none. Raises
        BrokerUnavailable when the broker does not answer within ``timeout_s``."""
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        if not wanted:
            return {}
        request = ConsumerGroupTopicPartitions(self.group_id, wanted)
        try:
            futures = self._admin.list_consumer_group_offsets([request], request_timeout=timeout_s)
            reply = await asyncio.wait_for(asyncio.wrap_future(futures[self.group_id]), timeout_s)
        except (KafkaException, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"cannot read the committed offsets of group {self.group_id}: {exc!r}"
            ) from exc
        committed: dict[tuple[str, int], int | None] = {}
        for tp in reply.topic_partitions:
            # OFFSET_INVALID (-1001) or an error: the group has no usable commit there.
            usable = tp.error is None and tp.offset >= 0
            committed[(tp.topic, tp.partition)] = tp.offset if usable else None
        return committed

    async def ends(
        self, partitions: Iterable[tuple[str, int]], timeout_s: float
    ) -> dict[tuple[str, int], int]:
        """The end of each ``(topic, partition)``'s log (the offset of the next message to
        be written there). Raises BrokerUnavailable."""
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        wanted = {TopicPartition(t, p): latest for t, p in partitions}
        if not wanted:
            return {}
        try:
            futures = self._admin.list_offsets(wanted, request_timeout=timeout_s)
            ends: dict[tuple[str, int], int] = {}
            for tp, future in futures.items():
                info = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
                ends[(tp.topic, tp.partition)] = int(info.offset)
        except (KafkaException, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot read the ends of the log: {exc!r}") from exc
        return ends

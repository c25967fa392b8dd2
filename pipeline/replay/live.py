"""The live replay: an event log put back on the live topics, keeping its timing.

Records go out in event-time order (``ts``; alerts first at equal ``ts``; then file order,
:func:`~pipeline.replay.order.in_event_time_order`) through a :class:`Publisher`, paced to
keep their original relative timing (``speed`` times faster), optionally capped at
``max_rate`` events/s, or as fast as possible. Keys, values and headers are sent exactly as
logged. Without ``retime_to_ms`` the producer stamps records with the time they are sent;
with it, every record and the times inside alerts and locations are shifted by one offset
(whole seconds) that moves the first record to ``retime_to_ms``, and the shifted ``ts``
becomes the Kafka timestamp.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.replay.eventlog import read_lines
from pipeline.replay.order import in_event_time_order
from pipeline.replay.progress import progress_bar
from pipeline.replay.retime import retime_record
from pipeline.replay.topics import TopicNames

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where the records go (``pipeline.adapters.kafka.tools.DeliveryProducer``): ``flush``
    returns once the broker acknowledged every record sent, and raises BrokerUnavailable
    if any could not be delivered."""

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None: ...

    def flush(self) -> int: ...


@dataclass(slots=True)
class LiveSummary:
    per_topic: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    duration_s: float = 0.0
    rate: float = 0.0
    mean_lateness_ms: float = 0.0
    max_lateness_ms: float = 0.0
    retime_delta_ms: int = 0


def publish_log(
    path: str | Path,
    producer: Publisher,
    topics: TopicNames,
    *,
    speed: float = 1.0,
    max_rate: float | None = None,
    as_fast_as_possible: bool = False,
    retime_to_ms: int | None = None,
    progress: bool = True,
) -> LiveSummary:
    """Publish the log through ``producer`` to the real topics ``topics`` names (see the
    module docstring). Raises ValueError for a speed or rate that is not positive, and
    BrokerUnavailable if the broker did not acknowledge every record."""
    if speed <= 0 or (max_rate is not None and max_rate <= 0):
        raise ValueError("speed and max-rate must be positive")
    summary = LiveSummary()
    per_topic: Counter[str] = Counter()
    bar = progress_bar("replay", sum(1 for _ in read_lines(path))) if progress else None
    first_ts: int | None = None
    delta = 0
    previous_due = 0.0
    lateness_total = 0.0
    started = time.monotonic()
    for item in in_event_time_order(path):
        record = item.record
        if first_ts is None:
            first_ts = record.ts
            if retime_to_ms is not None:
                delta = round((retime_to_ms - first_ts) / 1000) * 1000
                summary.retime_delta_ms = delta
        due = 0.0 if as_fast_as_possible else (record.ts - first_ts) / 1000 / speed
        if max_rate is not None and summary.sent:
            due = max(due, previous_due + 1 / max_rate)
        previous_due = due
        wait = started + due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if retime_to_ms is not None:
            record = retime_record(record, delta, topics.logical(record.topic))
        topic = topics.real(record.topic)
        producer.send(
            topic,
            record.value,
            key=record.key,
            headers=record.headers,
            timestamp_ms=record.ts if retime_to_ms is not None else None,
        )
        lateness = max(0.0, time.monotonic() - started - due) * 1000
        lateness_total += lateness
        summary.max_lateness_ms = max(summary.max_lateness_ms, lateness)
        summary.sent += 1
        per_topic[topic] += 1
        if bar is not None:
            bar.update(1)
    producer.flush()
    if bar is not None:
        bar.close()
    summary.duration_s = time.monotonic() - started
    summary.rate = summary.sent / summary.duration_s if summary.duration_s > 0 else 0.0
    summary.mean_lateness_ms = lateness_total / summary.sent if summary.sent else 0.0
    summary.per_topic = dict(sorted(per_topic.items()))
    log.info("replay done sent=%d duration_s=%.1f", summary.sent, summary.duration_s)
    return summary

"""The recorder: topic traffic captured into an event log.

Records are read from a :class:`PartitionSource` (every partition of the topics, from where
the caller chose). Each keeps its topic (as a logical name when it is one of alertfeed's),
partition, offset, broker timestamp, key, headers and value, bytes exact
(:mod:`pipeline.replay.eventlog`).

Recording stops at the first of:

* ``count`` records written;
* ``until_ms``: records stamped at or after it are not written; recording stops once every
  partition has passed it, or the wall clock has and every partition is read to its end;
* ``idle_timeout_s`` without a new record;
* Ctrl-C. The log is always closed properly.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.domain.records import RawEvent
from pipeline.replay.eventlog import EventLogWriter, LoggedRecord
from pipeline.replay.progress import progress_bar
from pipeline.replay.topics import TopicNames

log = logging.getLogger(__name__)


class PartitionSource(Protocol):
    """What the recorder reads (``pipeline.adapters.kafka.consumer.PartitionReader``)."""

    @property
    def at_end(self) -> Mapping[tuple[str, int], bool]:
        """Each partition assigned: whether the last poll found it read to its end."""

    def assign(self) -> None:
        """Start reading. Raises ConfigurationError for a topic that does not exist,
        BrokerUnavailable."""

    def poll(self, timeout_s: float) -> RawEvent | None:
        """The next record, or None. Raises BrokerUnavailable."""


@dataclass(slots=True)
class RecordSummary:
    records: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


def logged_record(record: RawEvent, topics: TopicNames) -> LoggedRecord:
    """A consumed record as a log record, under its logical topic name where it has one."""
    return LoggedRecord(
        topic=topics.logged(record.topic),
        ts=record.timestamp_ms,
        key=record.key,
        value=record.value,
        headers=record.headers,
        partition=record.partition,
        offset=record.offset,
    )


def record_log(
    source: PartitionSource,
    topics: TopicNames,
    out: str | Path,
    *,
    until_ms: int | None = None,
    count: int | None = None,
    idle_timeout_s: float | None = None,
    progress: bool = True,
) -> RecordSummary:
    """Record what ``source`` reads into ``out``; see the module docstring. Does not close
    ``source``. Raises ConfigurationError for a topic that does not exist,
    BrokerUnavailable when the broker fails."""
    summary = RecordSummary()
    per_topic: Counter[str] = Counter()
    started = time.monotonic()
    bar = progress_bar("record", count, unit="rec") if progress else None
    try:
        source.assign()
        stop = _StopRule(count, until_ms, idle_timeout_s, source.at_end)
        with EventLogWriter(out) as writer:
            while not stop.reached(writer.count):
                consumed = source.poll(0.2)
                if consumed is None:
                    continue
                record = logged_record(consumed, topics)
                if stop.keeps((consumed.topic, consumed.partition), record.ts):
                    writer.write(record)
                    per_topic[record.topic] += 1
                    if bar is not None:
                        bar.update(1)
            summary.records = writer.count
    except KeyboardInterrupt:
        log.info("recording interrupted records=%d", sum(per_topic.values()))
        summary.records = sum(per_topic.values())
    finally:
        if bar is not None:
            bar.close()
    summary.per_topic = dict(sorted(per_topic.items()))
    summary.elapsed_s = time.monotonic() - started
    return summary


class _StopRule:
    """When recording stops (see the module docstring), tracked per partition; ``at_end``
    is the source's own, kept up to date by its polls."""

    def __init__(
        self,
        count: int | None,
        until_ms: int | None,
        idle_timeout_s: float | None,
        at_end: Mapping[tuple[str, int], bool],
    ) -> None:
        self._count = count
        self._until_ms = until_ms
        self._idle_timeout_s = idle_timeout_s
        self.at_end = at_end
        self._passed: set[tuple[str, int]] = set()
        self._last_record = time.monotonic()

    def keeps(self, tp: tuple[str, int], ts: int) -> bool:
        """Note a record of partition ``tp``; whether it belongs in the log."""
        self._last_record = time.monotonic()
        if self._until_ms is not None and ts >= self._until_ms:
            self._passed.add(tp)
            return False
        return True

    def reached(self, written: int) -> bool:
        if self._count is not None and written >= self._count:
            return True
        idle = time.monotonic() - self._last_record
        if self._idle_timeout_s is not None and idle > self._idle_timeout_s:
            return True
        if self._until_ms is None:
            return False
        if len(self._passed) == len(self.at_end):
            return True
        caught_up = all(done or tp in self._passed for tp, done in self.at_end.items())
        return caught_up and time.time_ns() // 1_000_000 >= self._until_ms

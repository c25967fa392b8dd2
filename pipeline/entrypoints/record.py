"""``alertfeed record``: capture topic traffic into an event log.

Every partition of the named topics is assigned (no consumer group offsets are committed)
and read from the start (``from_beginning``), from the first record at or after
``since_ms``, or from the end (only what arrives from now on). Each record keeps its topic
(as a logical name when it is one of alertfeed's), partition, offset, broker timestamp,
key, headers and value, bytes exact (:mod:`pipeline.replay.eventlog`).

Recording stops at the first of:

* ``count`` records written;
* ``until_ms``: records stamped at or after it are not written; recording stops once every
  partition has passed it, or the wall clock has and every partition is read to its end;
* ``idle_timeout_s`` without a new record;
* Ctrl-C. The log is always closed properly.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import BrokerUnavailable, ConfigurationError
from pipeline.replay.eventlog import EventLogWriter, LoggedRecord, parse_when
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecordSummary:
    records: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


def real_topic(name: str, settings: Settings) -> str:
    """A logical name through ``settings.topics``; any other name is taken as a real topic."""
    return settings.topics.by_logical_name().get(name, name)


def record_topics(
    settings: Settings,
    topics: list[str],
    out: str | Path,
    *,
    from_beginning: bool = False,
    since_ms: int | None = None,
    until_ms: int | None = None,
    count: int | None = None,
    idle_timeout_s: float | None = None,
    progress: bool = True,
) -> RecordSummary:
    """Record ``topics`` (logical or real names) into ``out``; see the module docstring.

    Raises ConfigurationError for a topic that does not exist, BrokerUnavailable when the
    broker fails.
    """
    from confluent_kafka import Consumer, KafkaError

    logical = {real: name for name, real in settings.topics.by_logical_name().items()}
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"alertfeed-record-{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    summary = RecordSummary()
    per_topic: Counter[str] = Counter()
    started = time.monotonic()
    bar = _bar(count) if progress else None
    try:
        partitions = _start_positions(
            consumer, [real_topic(t, settings) for t in topics], from_beginning, since_ms
        )
        consumer.assign(partitions)
        stop = _StopRule(
            count, until_ms, idle_timeout_s, [(p.topic, p.partition) for p in partitions]
        )
        with EventLogWriter(out) as writer:
            while not stop.reached(writer.count):
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        stop.at_end[tp] = True
                        continue
                    raise BrokerUnavailable(f"consume failed: {error}")
                record = _logged(msg, logical)
                if stop.keeps(tp, record.ts):
                    writer.write(record)
                    per_topic[record.topic] += 1
                    if bar is not None:
                        bar.update(1)
            summary.records = writer.count
    except KeyboardInterrupt:
        log.info("recording interrupted records=%d", sum(per_topic.values()))
        summary.records = sum(per_topic.values())
    finally:
        consumer.close()
        if bar is not None:
            bar.close()
    summary.per_topic = dict(sorted(per_topic.items()))
    summary.elapsed_s = time.monotonic() - started
    return summary


class _StopRule:
    """When recording stops (see the module docstring), tracked per partition."""

    def __init__(
        self,
        count: int | None,
        until_ms: int | None,
        idle_timeout_s: float | None,
        partitions: list[tuple[str, int]],
    ) -> None:
        self._count = count
        self._until_ms = until_ms
        self._idle_timeout_s = idle_timeout_s
        self.at_end = dict.fromkeys(partitions, False)
        self._passed: set[tuple[str, int]] = set()
        self._last_record = time.monotonic()

    def keeps(self, tp: tuple[str, int], ts: int) -> bool:
        """Note a record of partition ``tp``; whether it belongs in the log."""
        self.at_end[tp] = False
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


def _logged(msg: Any, logical: dict[str, str]) -> LoggedRecord:
    """A consumed message as a log record, under its logical topic name where it has one."""
    topic = str(msg.topic())
    return LoggedRecord(
        topic=logical.get(topic, topic),
        ts=int(msg.timestamp()[1]),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        partition=msg.partition(),
        offset=msg.offset(),
    )


def _start_positions(
    consumer: Any, topics: list[str], from_beginning: bool, since_ms: int | None
) -> list[Any]:
    """Assignable partitions of ``topics`` with their start offsets."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException, TopicPartition

    partitions: list[TopicPartition] = []
    try:
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise ConfigurationError(f"topic {topic!r} does not exist")
            for number in sorted(meta.partitions):
                start = OFFSET_BEGINNING if from_beginning else OFFSET_END
                partitions.append(TopicPartition(topic, number, start))
        if since_ms is not None and not from_beginning:
            wanted = [TopicPartition(p.topic, p.partition, since_ms) for p in partitions]
            found = consumer.offsets_for_times(wanted, timeout=10)
            partitions = [
                TopicPartition(p.topic, p.partition, p.offset if p.offset >= 0 else OFFSET_END)
                for p in found
            ]
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read topic metadata: {exc}") from exc
    return partitions


def _bar(total: int | None) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, unit="rec", unit_scale=True, file=sys.stderr, desc="record")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic",
        nargs="+",
        required=True,
        help="logical names (alerts, locations, interstitials, lifecycle, dlq) or real topics",
    )
    parser.add_argument("--out", required=True, help="output log (.jsonl, .jsonl.gz, .jsonl.zst)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true")
    start.add_argument("--since", default=None, metavar="TIME", help="now-1h, ISO-8601, epoch ms")
    parser.add_argument("--until", default=None, metavar="TIME", help="stop at this broker time")
    parser.add_argument("--count", type=int, default=None, help="stop after N records")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--no-progress", action="store_true")


def run_record(args: argparse.Namespace, settings: Settings) -> int:
    """The ``record`` subcommand; prints a summary on stdout."""
    now = time.time_ns() // 1_000_000
    try:
        since = parse_when(args.since, now) if args.since else None
        until = parse_when(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"alertfeed record: {exc}", file=sys.stderr)
        return 2
    summary = record_topics(
        settings,
        args.topic,
        args.out,
        from_beginning=args.from_beginning,
        since_ms=since,
        until_ms=until,
        count=args.count,
        idle_timeout_s=args.idle_timeout,
        progress=not args.no_progress,
    )
    rate = summary.records / summary.elapsed_s if summary.elapsed_s else 0.0
    print(f"recorded {summary.records} records in {summary.elapsed_s:.1f}s ({rate:,.0f}/s)")
    for topic, n in summary.per_topic.items():
        print(f"  {topic}: {n}")
    return 0

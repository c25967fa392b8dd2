"""Record and replay on the real broker: every byte of every message (keys, values, headers,
non-UTF-8 ones included) survives record -> replay -> record, and the replay keeps the
original relative timing within ``TOLERANCE_MS``.

The tolerance checks replay pacing, the tool's promise; it is not a speed assertion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.adapters.kafka.tools import DeliveryProducer, ensure_topics
from pipeline.replay.eventlog import LoggedRecord, read_log
from pipeline.settings import Settings
from tests.support.cli import run_alertfeed

pytestmark = pytest.mark.integration

TOLERANCE_MS = 250
CAP = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
    b"<identifier>REC-1</identifier><headline>Caf\xc3\xa9</headline></alert>\n"
)
# (gap before sending in seconds, logical topic, key, value, headers)
MESSAGES: list[tuple[float, str, bytes | None, bytes, tuple[tuple[str, bytes | None], ...]]] = [
    (0.0, "locations", b"u-1", b'{"user_id":"u-1","lat":30.25,"lon":-97.75,"ts":1}', ()),
    (0.0, "locations", b"u-2", b"\xff\xfe not UTF-8 at all", (("trace", b"\x00\xff\xfe"),)),
    (0.5, "alerts", b"REC-1", CAP, (("content-type", b"application/cap+xml"),)),
    (1.5, "locations", None, b'{"user_id": "u-3", "lat": 30.250, "lon": -97.75, "ts": 2}', ()),
    (0.0, "alerts", b"\x80\x81binary-key", b"<alert>second</alert>", (("h", b"1"), ("h", b"2"))),
    (1.0, "locations", b"u-4", b"", (("empty", b""),)),
]


def alertfeed(settings: Settings, cwd: Path, *args: str) -> str:
    """``alertfeed ARGS...`` run as a person runs it, in a child process whose environment
    points it at ``settings``; checks that it succeeded and returns what it printed."""
    result = run_alertfeed(*args, settings=settings, cwd=cwd)
    assert result.returncode == 0, (result.returncode, result.stderr)
    return result.stdout


def produce_with_gaps(settings: Settings) -> None:
    producer = DeliveryProducer(settings)
    for gap, topic, key, value, headers in MESSAGES:
        time.sleep(gap)
        real = getattr(settings.topics, topic)
        producer.send(real, value, key=key, headers=headers)  # type: ignore[arg-type]
        producer.flush()


def content(record: LoggedRecord) -> tuple[str, bytes | None, bytes | None, object]:
    return (record.topic, record.key, record.value, record.headers)


def by_content(path: Path) -> dict[tuple[str, bytes | None, bytes | None, object], int]:
    records = list(read_log(path))
    table = {content(r): r.ts for r in records}
    assert len(table) == len(records) == len(MESSAGES)
    return table


def offsets(table: dict[tuple[str, bytes | None, bytes | None, object], int]) -> Iterator[int]:
    first = min(table.values())
    return (table[key] - first for key in sorted(table, key=repr))


def test_record_replay_record_is_byte_exact_and_keeps_relative_timing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    source, target = make_settings(), make_settings()
    ensure_topics(source)
    ensure_topics(target)
    produce_with_gaps(source)
    recorded, rerecorded = tmp_path / "recorded.jsonl.zst", tmp_path / "rerecorded.jsonl.gz"

    n = str(len(MESSAGES))
    record = ["record", "--topic", "alerts", "locations", "--from-beginning", "--count", n]
    alertfeed(source, tmp_path, *record, "--no-progress", "--out", str(recorded))
    original = by_content(recorded)
    expected = {(t, k, v, h) for _, t, k, v, h in MESSAGES}
    assert set(original) == expected  # the log holds exactly what was produced

    # Replay to the target's topics, named by their real names through --topic-map.
    remap = [
        f"--topic-map=alerts={target.topics.alerts}",
        f"--topic-map=locations={target.topics.locations}",
    ]
    summary = alertfeed(source, tmp_path, "replay", str(recorded), *remap, "--no-progress")
    assert f"replayed {n} records" in summary and target.topics.alerts in summary

    alertfeed(target, tmp_path, *record, "--no-progress", "--out", str(rerecorded))
    replayed = by_content(rerecorded)
    assert set(replayed) == expected  # byte for byte: keys, values, headers

    drift = [a - b for b, a in zip(offsets(original), offsets(replayed), strict=True)]
    print(f"replay timing drift per message (ms): {drift}")
    assert all(abs(d) <= TOLERANCE_MS for d in drift), drift
    assert max(offsets(original)) >= 2500  # the gaps really were there to keep


def test_record_stops_at_until_and_keeps_partitions_and_offsets(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from pipeline.entrypoints.record import record_topics

    settings = make_settings()
    ensure_topics(settings)
    producer = DeliveryProducer(settings)
    for i in range(5):
        producer.send(settings.topics.locations, b"%d" % i, key=b"same-key")
    producer.flush()
    out = tmp_path / "until.jsonl"
    summary = record_topics(
        settings,
        ["locations"],
        out,
        from_beginning=True,
        until_ms=time.time_ns() // 1_000_000 + 500,
        progress=False,
    )
    records = list(read_log(out))
    assert summary.records == 5 and summary.per_topic == {"locations": 5}
    assert [r.value for r in records] == [b"0", b"1", b"2", b"3", b"4"]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert len({r.partition for r in records}) == 1

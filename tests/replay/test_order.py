"""Event-time order of a log: stable, the same however much is read ahead, optimistic
reading that gives up rather than give other rows, and the helper process that takes a big
log apart."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import zstandard

from pipeline.errors import MalformedEvent
from pipeline.replay.eventlog import LoggedRecord, encode_record, write_log
from pipeline.replay.lines import LogRow
from pipeline.replay.order import (
    HELPER_MIN_BYTES,
    NotInOrder,
    TopicRun,
    event_time_blocks,
    event_time_rows,
    in_event_time_order,
)
from tests.support.event_logs import SUFFIXES, make_record


@pytest.mark.parametrize("chunk", [2, 1000])
def test_event_time_order_is_by_ts_then_alerts_first_then_file_order(
    tmp_path: Path, chunk: int
) -> None:
    records = [
        make_record(b"{}", ts=30, key=b"late"),
        make_record(b"{}", ts=10, key=b"first-location"),
        make_record(b"<a/>", topic="alerts", ts=10, key=b"alert"),
        make_record(b"{}", ts=20, key=b"x"),
        make_record(b"{}", ts=20, key=b"y"),
        make_record(b"{}", topic="lifecycle", ts=5, key=b"dropped"),
    ]
    path = tmp_path / "log.jsonl.zst"
    write_log(path, records)
    ordered = list(in_event_time_order(path, keep=lambda t: t != "lifecycle", chunk_records=chunk))
    assert [s.record.key for s in ordered] == [b"alert", b"first-location", b"x", b"y", b"late"]
    assert [s.seq for s in ordered] == [2, 1, 3, 4, 0]


@pytest.mark.parametrize("chunk", [1, 3, 250_000])
@pytest.mark.parametrize("shuffle", [False, True])
def test_event_time_order_is_the_same_however_much_is_read_ahead(
    tmp_path: Path, chunk: int, shuffle: bool
) -> None:
    records = [
        make_record(
            orjson.dumps(
                {"user_id": f"u{i}", "lat": 30.25, "lon": -97.75, "ts": 1795400000000 + i}
            ),
            ts=1795400000000 + i // 2,
            key=f"u{i}".encode(),
            topic="alertfeed.locations" if i % 7 == 3 else "locations",
        )
        for i in range(40)
    ]
    records[5] = make_record(b"<alert/>", topic="alerts", ts=records[5].ts, key=b"a")
    records[9] = make_record(b"{}", topic="lifecycle", ts=records[9].ts, key=b"x")
    records[11] = make_record(b'{"user_id": "spaced"}', ts=records[11].ts, key=None)
    if shuffle:
        records = records[1::2] + records[0::2]
    path = tmp_path / "log.jsonl.gz"
    write_log(path, records)
    keep = {"alerts", "locations", "alertfeed.locations"}.__contains__
    ordered = list(in_event_time_order(path, keep=keep, chunk_records=chunk))
    by_time = sorted(
        ((r.ts, 0 if r.topic == "alerts" else 1, seq), r)
        for seq, r in enumerate(records)
        if keep(r.topic)
    )
    assert [(s.seq, s.record) for s in ordered] == [(seq, r) for (_, _, seq), r in by_time]


def test_a_bad_line_is_raised_when_its_turn_comes(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = encode_record(make_record())
    path.write_bytes(good + b'{"topic":"locations","ts":1795400000001,"key":"k","value":[}\n')
    records = in_event_time_order(path)
    assert next(records).record == make_record()
    with pytest.raises(MalformedEvent, match="line 2"):
        next(records)


def mixed_records(count: int) -> list[LoggedRecord]:
    """Locations in event-time order, among them lines of every other kind."""
    records = [
        make_record(
            orjson.dumps(
                {"user_id": f"u{i}", "lat": 30.25, "lon": -97.75, "ts": 1795400000000 + i}
            ),
            ts=1795400000000 + i // 2,
            key=f"u{i}".encode(),
        )
        for i in range(count)
    ]
    records[6] = make_record(b"<alert/>", topic="alerts", ts=records[6].ts, key=b"a")
    records[9] = make_record(b"{}", topic="lifecycle", ts=records[9].ts, key=b"x")
    records[11] = make_record(b'{"user_id": "spaced"}', ts=records[11].ts, key=None)
    records[13] = make_record(ts=records[13].ts, headers=(("h", b"v"),), partition=2, offset=9)
    return records


def optimistic_rows(path: Path, *, helper_min_bytes: int = HELPER_MIN_BYTES) -> list[LogRow]:
    rows: list[LogRow] = []
    for block in event_time_blocks(path, optimistic=True, helper_min_bytes=helper_min_bytes):
        rows += block.rows() if isinstance(block, TopicRun) else block
    return rows


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_an_optimistic_reading_of_a_log_in_order_gives_the_same_rows(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"log{suffix}"
    write_log(path, mixed_records(40))
    assert optimistic_rows(path) == list(event_time_rows(path))
    # Simulated logs are mostly runs of locations: those come as columns.
    write_log(path, mixed_records(40)[14:])
    assert [type(block) for block in event_time_blocks(path, optimistic=True)] == [TopicRun]
    assert optimistic_rows(path) == list(event_time_rows(path))


def test_an_optimistic_reading_gives_up_on_a_log_out_of_order_or_with_a_bad_line(
    tmp_path: Path,
) -> None:
    """It leaves both to the reading without optimism: that one sorts the log, or raises
    the error before anything is read."""
    records = mixed_records(40)
    path = tmp_path / "log.jsonl"
    write_log(path, records[1:] + records[:1])
    with pytest.raises(NotInOrder):
        optimistic_rows(path)
    assert [row[0] for row in event_time_rows(path)][:3] == [0, 39, 1]  # ts, then position
    path.write_bytes(b"".join(map(encode_record, records)) + b'{"topic": 5}\n')
    with pytest.raises(NotInOrder):
        optimistic_rows(path)
    with pytest.raises(MalformedEvent, match="line 41"):
        next(event_time_rows(path))


def test_a_big_log_is_taken_apart_by_a_helper_process_with_the_same_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.jsonl.zst"
    write_log(path, mixed_records(5000))
    assert optimistic_rows(path, helper_min_bytes=0) == list(event_time_rows(path))  # big
    blocks = event_time_blocks(path, optimistic=True, helper_min_bytes=0)
    next(blocks)
    blocks.close()  # the helper, still writing, ends quietly
    # A reader that fails leaves the log to be read again without optimism.
    path.write_bytes(path.read_bytes()[:-100] + b"not zstd" * 20)
    with pytest.raises(NotInOrder):
        optimistic_rows(path, helper_min_bytes=0)
    with pytest.raises(zstandard.ZstdError):
        list(event_time_rows(path))

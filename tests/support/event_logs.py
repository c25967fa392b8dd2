"""Event-log records for the tests of the replay room."""

from __future__ import annotations

from pipeline.replay.eventlog import LoggedRecord

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


def make_record(
    value: bytes | None = b'{"user_id":"u-1","lat":30.25,"lon":-97.75,"ts":1795400000000}',
    *,
    topic: str = "locations",
    ts: int = 1795400000000,
    key: bytes | None = b"u-1",
    headers: tuple[tuple[str, bytes | None], ...] = (),
    partition: int | None = None,
    offset: int | None = None,
) -> LoggedRecord:
    return LoggedRecord(topic, ts, key, value, headers, partition, offset)

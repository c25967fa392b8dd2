"""The recorder on a source of consumed records: every byte kept, topics logged logically,
and recording stops when every partition has passed ``until``."""

from __future__ import annotations

from pathlib import Path

from pipeline.domain.records import RawEvent
from pipeline.replay.eventlog import read_log
from pipeline.replay.record import record_log
from pipeline.replay.topics import TopicNames
from pipeline.settings import TopicSettings

NAMES = TopicNames(TopicSettings().by_logical_name())


class ListSource:
    """Gives its records in order, then finds every partition at its end."""

    def __init__(self, records: list[RawEvent], partitions: list[tuple[str, int]]) -> None:
        self._records = list(records)
        self._partitions = partitions
        self.at_end: dict[tuple[str, int], bool] = {}

    def assign(self) -> None:
        self.at_end = dict.fromkeys(self._partitions, False)

    def poll(self, timeout_s: float) -> RawEvent | None:
        if not self._records:
            for tp in self.at_end:
                self.at_end[tp] = True
            return None
        record = self._records.pop(0)
        self.at_end[(record.topic, record.partition)] = False
        return record


def test_records_keep_their_bytes_and_coordinates_under_logical_names(tmp_path: Path) -> None:
    records = [
        RawEvent("alertfeed.locations", 1, 7, 1000, b"\xffk", b"\x00v", (("h", None),)),
        RawEvent("someone.elses", 0, 3, 1001, None, None),
    ]
    source = ListSource(records, [("alertfeed.locations", 1), ("someone.elses", 0)])
    summary = record_log(source, NAMES, tmp_path / "out.jsonl", count=2, progress=False)
    logged = list(read_log(tmp_path / "out.jsonl"))
    assert summary.records == 2
    assert summary.per_topic == {"locations": 1, "someone.elses": 1}
    assert [(r.topic, r.ts, r.key, r.value, r.headers, r.partition, r.offset) for r in logged] == [
        ("locations", 1000, b"\xffk", b"\x00v", (("h", None),), 1, 7),
        ("someone.elses", 1001, None, None, (), 0, 3),
    ]


def test_recording_stops_once_every_partition_has_passed_until(tmp_path: Path) -> None:
    topic = "alertfeed.locations"
    records = [RawEvent(topic, p, o, ts, b"k", b"v") for p, o, ts in [(0, 0, 5), (1, 0, 9)]]
    records += [RawEvent(topic, p, 1, 10, b"k", b"late") for p in (0, 1)]
    source = ListSource(records, [(topic, 0), (topic, 1)])
    summary = record_log(source, NAMES, tmp_path / "out.jsonl", until_ms=10, progress=False)
    assert summary.records == 2
    assert [r.value for r in read_log(tmp_path / "out.jsonl")] == [b"v", b"v"]

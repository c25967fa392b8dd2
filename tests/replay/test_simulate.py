"""A scenario written as an event log: the same arguments give the same bytes."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.replay.eventlog import read_log
from pipeline.replay.simulate import simulate_to

START = 1795400000000


def test_simulate_to_writes_the_same_bytes_for_the_same_arguments(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl.zst", tmp_path / "b.jsonl.zst"
    summary = simulate_to(first, 200, 600, 2, 5, START, report_every_s=30)
    simulate_to(second, 200, 600, 2, 5, START, report_every_s=30)
    assert first.read_bytes() == second.read_bytes()
    records = list(read_log(first))
    assert len(records) == summary.records == summary.locations + summary.alert_messages
    assert summary.alert_messages == 6
    location = next(r for r in records if r.topic == "locations")
    assert location.key is not None and location.value is not None
    assert orjson.loads(location.value)["user_id"] == location.key.decode()

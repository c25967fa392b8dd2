"""Times and durations as the log tools take them on the command line."""

from __future__ import annotations

import pytest

from pipeline.entrypoints.replay_args import parse_duration_ms, parse_when


def test_command_line_times_and_durations() -> None:
    now = 1795400000000
    assert parse_when("now", now) == now
    assert parse_when("now-10m", now) == now - 600_000
    assert parse_when("now+1.5h", now) == now + 5_400_000
    assert parse_when("1795400000123", now) == 1795400000123
    assert parse_when("2026-11-23T00:00:00Z", now) == 1795392000000
    assert parse_duration_ms("90") == 90_000 and parse_duration_ms("250ms") == 250
    for bad in ("yesterday", "2026-11-23T00:00:00"):
        with pytest.raises(ValueError):
            parse_when(bad, now)

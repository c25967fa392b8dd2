"""Synthetic scenarios: deterministic, in event-time order, plausible people, and alerts the
worker's own parser accepts, issued, grown and cancelled."""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import pairwise

import pytest

from pipeline.domain.alerts.cap import parse_cap
from pipeline.replay.scenario import DEFAULT_SENDER, ScenarioEvent, ScenarioSpec, scenario_events
from tests.support.schemas import assert_valid

START = 1795400000000


def make_spec(**changes: object) -> ScenarioSpec:
    values: dict[str, object] = {
        "users": 300,
        "duration_s": 1800,
        "alerts": 4,
        "seed": 11,
        "start_ms": START,
        "report_every_s": 60,
    }
    values.update(changes)
    return ScenarioSpec(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def events() -> list[ScenarioEvent]:
    return list(scenario_events(make_spec()))


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = (a[0] - b[0]) * 111_320
    east = (a[1] - b[1]) * 111_320 * math.cos(math.radians(a[0]))
    return math.hypot(north, east)


def test_same_seed_same_events_other_seed_other_events(events: list[ScenarioEvent]) -> None:
    assert list(scenario_events(make_spec())) == events
    assert list(scenario_events(make_spec(seed=12))) != events


def test_events_are_in_event_time_order_with_alerts_first_and_inside_the_run(
    events: list[ScenarioEvent],
) -> None:
    heads = [(ts, 0 if topic == "alerts" else 1) for topic, ts, _, _ in events]
    assert heads == sorted(heads)
    assert all(START <= ts < START + 1800 * 1000 for _, ts, _, _ in events)


def test_locations_follow_the_schema_and_move_at_human_speeds(
    events: list[ScenarioEvent],
) -> None:
    tracks: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for topic, ts, key, value in events:
        if topic == "locations":
            assert_valid("location", value)
            assert key == value["user_id"] and value["ts"] == ts
            tracks[key].append((ts, value["lat"], value["lon"]))
    assert len(tracks) == 300
    assert all(len(track) >= 15 for track in tracks.values())  # ~every minute for 30 min
    still = 0
    for track in tracks.values():
        for (t1, lat1, lon1), (t2, lat2, lon2) in pairwise(track):
            speed = metres((lat1, lon1), (lat2, lon2)) / ((t2 - t1) / 1000)
            assert speed <= 25.5, f"{speed:.1f} m/s is faster than any car in town"
        still += len({(lat, lon) for _, lat, lon in track}) == 1
    assert 0.15 * 300 < still < 0.5 * 300  # some never move after their first report


def test_alerts_are_issued_grown_and_cancelled_as_cap_the_parser_accepts(
    events: list[ScenarioEvent],
) -> None:
    by_key: dict[str, list[object]] = defaultdict(list)
    for topic, _, key, value in events:
        if topic == "alerts":
            (alert,) = parse_cap(value.encode())
            assert alert.sender == DEFAULT_SENDER and alert.status == "Actual"
            assert alert.event == "Child Abduction Emergency"
            assert [c.value for c in alert.event_codes] == ["CAE"]
            by_key[key].append(alert)
    assert len(by_key) == 4
    for key, (issued, update, cancel) in by_key.items():
        assert [a.msg_type for a in (issued, update, cancel)] == ["Alert", "Update", "Cancel"]  # type: ignore[attr-defined]
        assert issued.identifier == key  # type: ignore[attr-defined]
        assert {r.identifier for r in update.references} == {key}  # type: ignore[attr-defined]
        assert key in {r.identifier for r in cancel.references}  # type: ignore[attr-defined]
        assert span(update) > 1.5 * span(issued)  # the area grows
        assert issued.child is not None and issued.vehicle is not None  # type: ignore[attr-defined]


def span(alert: object) -> float:
    area = alert.areas[0]  # type: ignore[attr-defined]
    if area.circles:
        return float(area.circles[0].radius_km)
    lats = [p[0] for p in area.polygons[0].exterior]
    return max(lats) - min(lats)


def test_the_sender_is_configurable() -> None:
    spec = make_spec(users=5, sender="amber@ncmec.example", alerts=1)
    alerts = [v for t, _, _, v in scenario_events(spec) if t == "alerts"]
    assert alerts and all(parse_cap(v.encode())[0].sender == "amber@ncmec.example" for v in alerts)

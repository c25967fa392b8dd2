from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.models import Location, Sighting
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.locations import (
    RawLocations,
    location_from_json,
    parse_location,
    parse_locations,
    sightings_of,
)
from pipeline.errors import MalformedEvent

NOW = 1_795_400_000_000


def parse(obj: object) -> object:
    return parse_location(orjson.dumps(obj), now_ms=NOW, max_future_skew_ms=300_000)


def test_valid_location_keeps_every_field() -> None:
    loc = parse({"user_id": "u1", "lat": 30.5, "lon": -97.25, "ts": NOW, "accuracy_m": 8})
    assert (loc.user_id, loc.lat, loc.lon, loc.ts, loc.accuracy_m) == ("u1", 30.5, -97.25, NOW, 8.0)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {"user_id": "u", "lat": 91, "lon": 0, "ts": NOW},
            "latitude 91.0 out of range in location",
        ),
        (
            {"user_id": "u", "lat": 0, "lon": -180.5, "ts": NOW},
            "longitude -180.5 out of range in location",
        ),
        ({"user_id": "u", "lon": 0, "ts": NOW}, "missing lat"),
        ({"user_id": "", "lat": 0, "lon": 0, "ts": NOW}, "user_id"),
        ({"user_id": "u", "lat": "1", "lon": 0, "ts": NOW}, "finite number"),
        ({"user_id": "u", "lat": 0, "lon": 0, "ts": NOW / 1000}, "ts must be an integer"),
        ({"user_id": "u", "lat": 0, "lon": 0, "ts": NOW // 1000}, "not epoch milliseconds"),
        ({"user_id": "u", "lat": 0, "lon": 0, "ts": NOW + 3_600_000}, "in the future"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_locations_are_rejected_with_a_reason(event: object, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        parse(event)


def test_nan_is_not_json() -> None:
    with pytest.raises(MalformedEvent, match="not valid JSON"):
        parse_location(
            b'{"user_id":"u","lat":NaN,"lon":0,"ts":1795400000000}',
            now_ms=NOW,
            max_future_skew_ms=0,
        )


def outcome(call: Callable[[], Location]) -> object:
    try:
        location = call()
    except MalformedEvent as exc:
        return str(exc)
    return (location, [type(v) for v in astuple(location)])


numbers = st.one_of(
    st.floats(allow_nan=False),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.none(),
    st.sampled_from([-0.0, 0.0, 90.0, -90.0, 180.0, -180.0, 90.000001, 1e308]),
)


@given(
    event=st.dictionaries(
        st.sampled_from(["user_id", "lat", "lon", "ts", "accuracy_m", "x"]),
        st.one_of(numbers, st.text(max_size=3)),
    ),
    ts=st.one_of(st.none(), st.integers(NOW - 10**13, NOW + 10**6)),
    lat=st.one_of(st.none(), numbers),
)
@settings(max_examples=500, deadline=None)
def test_parsing_reads_any_event_as_the_general_rules_do(
    event: dict[str, object], ts: int | None, lat: object
) -> None:
    """parse_location checks the common shape first, on its own: it must accept, reject
    and read every event exactly as location_from_json does."""
    event = {"user_id": "u", "lon": 1.5, **event}
    if ts is not None:
        event["ts"] = ts
    if lat is not None:
        event["lat"] = lat
    data = orjson.dumps(event)
    assert outcome(lambda: parse_location(data, now_ms=NOW, max_future_skew_ms=300_000)) == outcome(
        lambda: location_from_json(orjson.loads(data), now_ms=NOW, max_future_skew_ms=300_000)
    )


usual_events = st.fixed_dictionaries(
    {
        "user_id": st.from_regex(r"u[0-9]{1,3}", fullmatch=True),
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
        "ts": st.integers(NOW - 10**6, NOW + 300_000),
    },
    optional={"accuracy_m": st.one_of(st.none(), st.floats(0, 1e6))},
)
odd_fields = st.dictionaries(
    st.sampled_from(["user_id", "lat", "lon", "ts", "accuracy_m", "x"]),
    st.one_of(numbers, st.text(max_size=3)),
    min_size=1,
)


@given(
    events=st.lists(usual_events, min_size=1, max_size=6),
    odd=st.one_of(st.none(), st.tuples(st.integers(0, 5), odd_fields)),
)
@settings(max_examples=500, deadline=None)
def test_a_batch_read_at_once_reads_each_event_as_parse_location_does(
    events: list[dict[str, object]], odd: tuple[int, dict[str, object]] | None
) -> None:
    """Usual events are read at once; with an odd one among them (valid or not), either
    still at once, exactly as parse_location reads each, or not at all."""
    if odd is not None:
        index, fields = odd
        events[index % len(events)] = {**events[index % len(events)], **fields}
    values = [orjson.dumps(event) for event in events]
    columns = parse_locations(values, now_ms=NOW, max_future_skew_ms=300_000)
    if columns is None:
        assert odd is not None
        return
    assert len(columns[0]) == len(values)
    for value, read in zip(values, zip(*columns, strict=True), strict=True):
        location = parse_location(value, now_ms=NOW, max_future_skew_ms=300_000)  # no raise
        expected = (location.user_id, location.lat, location.lon, location.ts)
        assert read == expected and list(map(type, read)) == list(map(type, expected))


def test_a_batch_of_usual_events_is_read_at_once_and_any_odd_one_declines_it() -> None:
    usual = [
        {"user_id": "u1", "lat": 30.5, "lon": -97.25, "ts": NOW, "accuracy_m": 8.0},
        {"user_id": "u2", "lat": -90.0, "lon": 180.0, "ts": NOW - 1},
    ]
    columns = parse_locations(list(map(orjson.dumps, usual)), now_ms=NOW, max_future_skew_ms=0)
    assert columns == (["u1", "u2"], [30.5, -90.0], [-97.25, 180.0], [NOW, NOW - 1])
    for odd in (
        {"lat": 30},  # valid, but an int: parse_location reads it the general way
        {"accuracy_m": -1.0},
        {"ts": NOW + 1},
        {"user_id": ""},
    ):
        values = [orjson.dumps(usual[0]), orjson.dumps({**usual[1], **odd})]
        assert parse_locations(values, now_ms=NOW, max_future_skew_ms=0) is None
    for bad in ([], [b"{oops"], [None], [b"[1]"]):
        assert parse_locations(bad, now_ms=NOW, max_future_skew_ms=0) is None


def test_sightings_and_raw_locations_are_the_objects_they_stand_for() -> None:
    assert sightings_of(["u1", "u2"], [11, 12], [NOW, NOW + 1]) == [
        Sighting("u1", 11, NOW),
        Sighting("u2", 12, NOW + 1),
    ]
    raws = [RawEvent("t", 0, 7, NOW, b"k", b"{}"), RawEvent("t", 3, 8, NOW + 1, None, None)]
    columns = RawLocations("t", [0, 3], [7, 8], [NOW, NOW + 1], [b"k", None], [b"{}", None])
    assert (len(columns), list(columns), columns[1], columns[:1]) == (2, raws, raws[1], raws[:1])

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.locations import location_from_json, parse_location
from pipeline.domain.models import Location
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
        ({"user_id": "u", "lat": 91, "lon": 0, "ts": NOW}, "lat out of range"),
        ({"user_id": "u", "lat": 0, "lon": -180.5, "ts": NOW}, "lon out of range"),
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

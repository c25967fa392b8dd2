from __future__ import annotations

import orjson
import pytest

from pipeline.domain.locations import parse_location
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

"""Alert JSON (schemas/alert.schema.json) to Alert: regressions found by the fuzz test."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.domain.alerts.alert_json import alert_from_json
from pipeline.errors import MalformedEvent
from tests.support.factories import make_alert_json

SQUARE = [(30.2, -97.8), (30.4, -97.8), (30.4, -97.6), (30.2, -97.6)]
HOLE = [[30.25, -97.75], [30.3, -97.75], [30.3, -97.7], [30.25, -97.75]]


def with_holes(holes: Any) -> dict[str, Any]:
    obj = make_alert_json(polygons=[SQUARE])
    obj["areas"][0]["holes"] = holes
    return obj


def test_holes_become_the_holes_of_their_polygon() -> None:
    (area,) = alert_from_json(with_holes([[HOLE]])).areas
    assert area.polygons[0].holes == (tuple((lat, lon) for lat, lon in HOLE),)
    nothing: tuple[Any, ...] = (None, [], [None], [[]])
    for none in nothing:
        assert alert_from_json(with_holes(none)).areas[0].polygons[0].holes == ()


@pytest.mark.parametrize(
    ("holes", "reason"),
    [
        # An int and a dict raised TypeError and KeyError; a string was read as its letters.
        (5, "areas[0].holes must be a list (per polygon, a list of hole rings), not int"),
        ({"a": 1}, "areas[0].holes must be a list (per polygon, a list of hole rings), not dict"),
        ("abc", "areas[0].holes must be a list (per polygon, a list of hole rings), not str"),
        ([5], "areas[0].holes[0] must be a list of the hole rings of polygons[0], not int"),
        ([{"a": 1}], "areas[0].holes[0] must be a list of the hole rings of polygons[0], not dict"),
        ([[5]], "areas[0].holes[0][0] must be a list of [lat, lon] points"),
    ],
)
def test_holes_of_the_wrong_type_are_malformed(holes: Any, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        alert_from_json(with_holes(holes))
    assert str(caught.value) == reason


def test_reasons_quote_a_long_value_briefly() -> None:
    for key in ("status", "msg_type", "sent"):
        obj = make_alert_json(polygons=[SQUARE])
        obj[key] = "x" * 100_000
        with pytest.raises(MalformedEvent) as caught:
            alert_from_json(obj)
        assert f"{key} 'xxxx" in str(caught.value)
        assert len(str(caught.value)) < 150
    obj = make_alert_json(circles=[(30.3, -97.7, 5.0)])
    obj["areas"][0]["circles"][0]["radius_km"] = [0] * 100_000
    with pytest.raises(MalformedEvent, match=r"radius_km \[0, 0, .*\.\.\. is not a finite number"):
        alert_from_json(obj)

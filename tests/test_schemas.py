"""The published event contracts: every schema is valid 2020-12 and its example passes."""

from __future__ import annotations

import json

import pytest

from pipeline.domain.alerts.alert_json import alert_from_json, alert_to_json
from tests.support.schemas import SCHEMAS, assert_valid

NAMES = sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json"))


def test_every_event_has_a_schema() -> None:
    assert set(NAMES) >= {"alert", "location", "interstitial", "lifecycle", "dead_letter"}


@pytest.mark.parametrize("name", NAMES)
def test_example_validates(name: str) -> None:
    example = json.loads((SCHEMAS / "examples" / f"{name}.json").read_text())
    assert_valid(name, example)


def test_alert_example_round_trips_through_the_parser() -> None:
    example = json.loads((SCHEMAS / "examples" / "alert.json").read_text())
    alert = alert_from_json(example)
    again = alert_to_json(alert)
    assert_valid("alert", again)
    assert alert_from_json(again) == alert
    assert alert.child is not None and alert.child.name == "Maria Lopez"
    assert alert.areas[0].circles[0].radius_km == 25


def test_location_schema_rejects_renamed_fields() -> None:
    with pytest.raises(AssertionError):
        assert_valid("location", {"user": "u", "latitude": 1.0, "lon": 2.0, "ts": 1795400000000})

"""The CAP writer: what it writes, the CAP parser reads back as the same alert."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.alerts.cap import parse_cap
from pipeline.domain.alerts.cap_writer import cap_time, cap_xml
from pipeline.domain.models import (
    Alert,
    Area,
    Circle,
    Geocode,
    Image,
    Polygon,
    Reference,
    Translation,
)

SENT = 1795400000000  # whole seconds: CAP has no fractions


def make_alert(**changes: object) -> Alert:
    values: dict[str, object] = {
        "identifier": "AMBER-TX-1",
        "sender": "amber@dps.texas.example",
        "sent_ms": SENT,
        "status": "Actual",
        "msg_type": "Alert",
        "expires_ms": SENT + 6 * 3600 * 1000,
        "event": "Child Abduction Emergency",
        "event_codes": (Geocode("SAME", "CAE"),),
        "categories": ("Rescue",),
        "urgency": "Immediate",
        "severity": "Severe",
        "certainty": "Likely",
        "headline": "AMBER Alert: Austin, TX <silver> Honda & co",
        "description": "Last seen near Zilker Park.",
        "instruction": "Call 911.",
        "web": "https://www.missingkids.org/",
        "sender_name": "Texas DPS",
        "areas": (
            Area(
                description="Central Austin",
                polygons=(
                    Polygon(((30.2, -97.82), (30.21, -97.7), (30.3, -97.66), (30.2, -97.82))),
                ),
                circles=(Circle(30.25, -97.75, 5.5),),
                geocodes=(Geocode("SAME", "048453"),),
            ),
        ),
    }
    values.update(changes)
    return Alert(**values)  # type: ignore[arg-type]


def round_trip(alert: Alert) -> Alert:
    parsed = parse_cap(cap_xml(alert).encode())
    assert len(parsed) == 1
    return parsed[0]


def test_an_amber_alert_reads_back_equal() -> None:
    alert = make_alert()
    assert round_trip(alert) == alert


def test_updates_cancels_images_parameters_and_translations_read_back_equal() -> None:
    update = make_alert(
        identifier="AMBER-TX-1-U1",
        msg_type="Update",
        references=(Reference("amber@dps.texas.example", "AMBER-TX-1", cap_time(SENT - 60_000)),),
        effective_ms=SENT,
        parameters=(Geocode("ChildName", "Maria Lopez"), Geocode("VehiclePlate", "ABC123")),
        images=(Image(uri="https://x.example/p.jpg", mime_type="image/jpeg", description="p"),),
        translations=(Translation(language="es-US", headline="Alerta AMBER"),),
    )
    back = round_trip(update)
    # AMBER people and vehicle travel as parameters; the parser derives them again.
    assert back.child is not None and back.child.name == "Maria Lopez"
    assert back.vehicle is not None and back.vehicle.license_plate == "ABC123"
    assert back == replace(update, child=back.child, vehicle=back.vehicle)
    assert parse_cap(cap_xml(back).encode())[0].references[0].identifier == "AMBER-TX-1"
    cancel = make_alert(msg_type="Cancel", areas=(), references=update.references)
    assert round_trip(cancel) == cancel


def test_content_cap_cannot_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="holes"):
        cap_xml(make_alert(areas=(Area(polygons=(Polygon(((0, 0),) * 4, holes=(((1, 1),),)),)),)))
    with pytest.raises(ValueError, match="XML"):
        cap_xml(make_alert(headline="bell \x07"))


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40).map(
    str.strip
)
LAT = st.floats(min_value=-90, max_value=90, allow_nan=False)
LON = st.floats(min_value=-180, max_value=180, allow_nan=False)


@given(
    identifier=TEXT.filter(lambda t: t and " " not in t and "," not in t),
    headline=TEXT,
    description=TEXT,
    sent_s=st.integers(min_value=1_000_000_000, max_value=4_000_000_000),
    ring=st.lists(st.tuples(LAT, LON), min_size=3, max_size=8),
    circle=st.tuples(LAT, LON, st.floats(min_value=0, max_value=500, allow_nan=False)),
)
@settings(max_examples=150, deadline=None)
def test_any_alert_cap_can_carry_reads_back_equal(
    *,
    identifier: str,
    headline: str,
    description: str,
    sent_s: int,
    ring: list[tuple[float, float]],
    circle: tuple[float, float, float],
) -> None:
    alert = make_alert(
        identifier=identifier,
        headline=headline,
        description=description,
        sent_ms=sent_s * 1000,
        areas=(
            Area(
                description=headline,
                polygons=(Polygon((*ring, ring[0])),),
                circles=(Circle(*circle),),
            ),
        ),
    )
    assert round_trip(alert) == alert

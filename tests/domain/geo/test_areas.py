"""An alert's areas to its one cover: what cover_alert accepts and what it refuses."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pipeline.domain.geo.areas import cover_alert
from pipeline.domain.geo.cover import CoverLimits
from pipeline.domain.geo.geocodes import (
    GeocodeResolution,
    InMemoryGazetteer,
    resolve_geocodes_with_reasons,
)
from pipeline.domain.models import Alert, Area, Circle, Geocode, Polygon
from pipeline.errors import UnsupportedArea

SQUARE = ((30.2, -97.8), (30.4, -97.8), (30.4, -97.6), (30.2, -97.6), (30.2, -97.8))


def resolve(geocodes: Sequence[Geocode]) -> GeocodeResolution:
    return resolve_geocodes_with_reasons(geocodes, InMemoryGazetteer())


def cover(*areas: Area) -> frozenset[int]:
    alert = Alert(
        identifier="a", sender="s", sent_ms=0, status="Actual", msg_type="Alert", areas=areas
    )
    return cover_alert(alert, resolution=5, limits=CoverLimits(), resolve_geocodes=resolve).cells


def test_a_polygon_and_a_tiny_circle_each_cover_cells() -> None:
    assert cover(Area(polygons=(Polygon(SQUARE),)))
    assert cover(Area(circles=(Circle(30.3, -97.7, 0.0),)))


@pytest.mark.parametrize(
    "polygon",
    [
        Polygon(((0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (0.0, 0.0))),  # three points on a line
        Polygon(SQUARE, holes=(SQUARE,)),  # a hole that is the whole polygon
    ],
)
def test_polygons_without_area_are_refused_not_installed_for_nobody(polygon: Polygon) -> None:
    # The fuzz test found such alerts accepted with an empty cover: "issued", reaching nobody.
    with pytest.raises(UnsupportedArea) as caught:
        cover(Area(polygons=(polygon,)))
    assert "its polygons enclose no area" in str(caught.value)
    assert caught.value.reason_class == "unsupported_area"


def test_the_reason_names_a_few_unresolved_geocodes_and_counts_the_rest() -> None:
    codes = tuple(Geocode("UGC", f"TXZ{n:03d}") for n in range(1, 201))
    with pytest.raises(UnsupportedArea) as caught:
        cover(Area(geocodes=codes))
    reason = str(caught.value)
    assert "UGC 'TXZ005' is an NWS forecast or marine zone" in reason
    assert "TXZ006" not in reason
    assert reason.endswith("; and 195 more unresolved geocodes")

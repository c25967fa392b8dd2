"""NWS alerts-API GeoJSON parsing: hand-written fixtures (tests/fixtures/nws) and factories."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.alerts.nws import parse_nws_geojson
from pipeline.domain.models import Alert, Geocode, Reference
from pipeline.errors import MalformedEvent, UnsupportedArea

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "nws"
SQUARE = [[-97.5, 35.4], [-97.2, 35.4], [-97.2, 35.6], [-97.5, 35.6], [-97.5, 35.4]]


def utc_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 1000


def load(name: str) -> dict[str, Any]:
    obj = orjson.loads((FIXTURES / name).read_bytes())
    assert isinstance(obj, dict)
    return obj


def make_feature(geometry: Any = None, **properties: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "id": "NWS-TEST-X",
        "sender": "w-nws.webmaster@noaa.gov",
        "sent": "2026-05-01T12:00:00-04:00",
        "status": "Actual",
        "messageType": "Alert",
        "event": "Test Warning",
        "areaDesc": "Somewhere",
    }
    props.update(properties)
    return {"type": "Feature", "geometry": geometry, "properties": props}


def polygon(*rings: list[list[Any]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def parse_one(obj: dict[str, Any]) -> Alert:
    alerts = parse_nws_geojson(obj)
    assert len(alerts) == 1
    return alerts[0]


def test_feature_with_polygon_maps_every_property() -> None:
    alert = parse_one(load("feature_polygon_tornado.json"))

    assert alert.identifier == "urn:oid:2.49.0.1.840.0.aaaa1111.001.1"
    assert alert.sender == "w-nws.webmaster@noaa.gov"
    assert alert.sent_ms == utc_ms(2026, 5, 1, 22, 2)
    assert alert.effective_ms == utc_ms(2026, 5, 1, 22, 2)
    assert alert.expires_ms == utc_ms(2026, 5, 1, 22, 45)
    assert (alert.status, alert.msg_type, alert.scope) == ("Actual", "Alert", "Public")
    assert alert.event == "Tornado Warning"
    assert alert.categories == ("Met",)
    assert (alert.urgency, alert.severity, alert.certainty) == (
        "Immediate",
        "Extreme",
        "Observed",
    )
    assert alert.sender_name == "NWS Norman OK"
    assert alert.instruction == "TAKE COVER NOW!"
    assert alert.web == "http://www.weather.gov"
    assert alert.event_codes == (Geocode("SAME", "TOR"), Geocode("NationalWeatherService", "TOW"))
    assert [p.value for p in alert.parameters if p.name == "BLOCKCHANNEL"] == [
        "EAS",
        "NWEM",
        "CMAS",
    ]
    assert alert.references == ()


def test_feature_polygon_is_converted_from_lon_lat_to_lat_lon() -> None:
    (area,) = parse_one(load("feature_polygon_tornado.json")).areas

    assert area.description == "Oklahoma, OK; Cleveland, OK"
    (poly,) = area.polygons
    assert poly.exterior[0] == (35.40, -97.50)
    assert poly.exterior[1] == (35.40, -97.20)
    assert len(poly.exterior) == 5
    assert poly.holes == ()
    assert area.geocodes == (
        Geocode("SAME", "040109"),
        Geocode("SAME", "040027"),
        Geocode("UGC", "OKC109"),
        Geocode("UGC", "OKC027"),
    )


def test_feature_collection_gives_one_alert_per_feature() -> None:
    first, second = parse_nws_geojson(load("collection_two_features.json"))

    assert first.identifier == "NWS-TEST-1"
    assert first.headline == "", "null is absent"
    assert first.areas[0].polygons[0].exterior[0] == (27.8, -82.8)
    assert second.msg_type == "Cancel"
    assert second.references == (
        Reference("w-nws.webmaster@noaa.gov", "NWS-TEST-0", "2026-05-01T14:00:00-04:00"),
    )
    assert second.areas[0].polygons == ()
    assert second.areas[0].geocodes == (Geocode("SAME", "012101"), Geocode("UGC", "FLC101"))


def test_null_geometry_area_comes_from_same_and_ugc_codes() -> None:
    alert = parse_one(load("feature_null_geometry_same.json"))

    (area,) = alert.areas
    assert area.polygons == ()
    assert area.geocodes == (
        Geocode("SAME", "041007"),
        Geocode("SAME", "041057"),
        Geocode("SAME", "041051"),
        Geocode("UGC", "ORZ001"),
        Geocode("UGC", "ORZ006"),
    )
    assert alert.msg_type == "Update"
    assert [r.identifier for r in alert.references] == [
        "NWS-IDP-PROD-0000000-0000009",
        "NWS-IDP-PROD-0000000-0000010",
    ]
    assert alert.expires_ms == utc_ms(2026, 5, 2, 12, 30)


def test_multipolygon_with_hole() -> None:
    alert = parse_one(load("feature_multipolygon_with_hole.json"))

    big, small = alert.areas[0].polygons
    assert big.exterior[0] == (25.0, -80.0)
    assert big.holes == (((25.2, -79.8), (25.2, -79.2), (25.8, -79.2), (25.2, -79.8)),)
    assert small.exterior[1] == (24.5, -80.5)
    assert alert.status == "Test"
    assert alert.categories == ("Met", "Safety")
    assert alert.identifier == "NWS-TEST-MP"


def test_ugc_codes_fall_back_to_affected_zones_only_when_geocode_has_none() -> None:
    zones = [
        "https://api.weather.gov/zones/forecast/FLZ050",
        "https://api.weather.gov/zones/county/FLC103",
        "https://api.weather.gov/zones/forecast/not-a-zone",
    ]
    bare = parse_one(make_feature(geocode={"SAME": ["012103"]}, affectedZones=zones))
    assert bare.areas[0].geocodes == (
        Geocode("SAME", "012103"),
        Geocode("UGC", "FLZ050"),
        Geocode("UGC", "FLC103"),
    )
    given_ugc = parse_one(make_feature(geocode={"UGC": ["FLZ051"]}, affectedZones=zones))
    assert given_ugc.areas[0].geocodes == (Geocode("UGC", "FLZ051"),)


def test_identifier_falls_back_to_the_feature_url() -> None:
    feature = make_feature(id=None)
    feature["id"] = "https://api.weather.gov/alerts/urn:oid:2.49.0.1.840.0.beef.001.1"
    assert parse_one(feature).identifier == "urn:oid:2.49.0.1.840.0.beef.001.1"


def test_amber_parameters_are_read_from_nws_parameters_too() -> None:
    feature = make_feature(parameters={"ChildName": ["Ann"], "VehicleColor": ["Red"]})
    alert = parse_one(feature)
    assert alert.child is not None and alert.child.name == "Ann"
    assert alert.vehicle is not None and alert.vehicle.color == "Red"


def test_empty_collection_is_no_alerts() -> None:
    assert parse_nws_geojson({"type": "FeatureCollection", "features": []}) == []


def test_json_ld_graph_with_wkt_geometry() -> None:
    props = make_feature()["properties"]
    props["geometry"] = "POLYGON ((-97.5 35.4, -97.2 35.4, -97.2 35.6, -97.5 35.4))"
    (alert,) = parse_nws_geojson({"@context": {}, "@graph": [props]})
    assert alert.areas[0].polygons[0].exterior == (
        (35.4, -97.5),
        (35.4, -97.2),
        (35.6, -97.2),
        (35.4, -97.5),
    )


def test_wkt_multipolygon_with_hole() -> None:
    props = make_feature()["properties"]
    props["@type"] = "wx:Alert"
    props["geometry"] = (
        "MULTIPOLYGON (((0 0, 4 0, 4 4, 0 0), (1 1, 2 1, 2 2, 1 1)),"
        " ((10 10, 11 10, 11 11, 10 10)))"
    )
    (alert,) = parse_nws_geojson(props)
    first, second = alert.areas[0].polygons
    assert first.holes == (((1.0, 1.0), (1.0, 2.0), (2.0, 2.0), (1.0, 1.0)),)
    assert second.exterior[1] == (10.0, 11.0)


@pytest.mark.parametrize(
    ("geometry", "reason"),
    [
        (
            polygon([[-97.5, 35.4], [-97.2, 35.4], [-97.5, 35.4]]),
            "feature 1: ring 1 of polygon 1 has 3 positions; GeoJSON needs at least 4",
        ),
        (
            polygon(SQUARE[:4]),
            "feature 1: ring 1 of polygon 1 is not closed (first position != last position)",
        ),
        (
            polygon([[-97.5, 95.0], *SQUARE[1:4], [-97.5, 95.0]]),
            "feature 1: latitude 95.0 out of range in ring 1 of polygon 1",
        ),
        (
            polygon(SQUARE, [[1, 1], [2, 1], ["x", 2], [1, 1]]),
            "feature 1: position 3 of ring 2 of polygon 1 ['x', 2] is not [lon, lat]",
        ),
        (
            polygon([[True, 35.4], *SQUARE[1:]]),
            "feature 1: position 1 of ring 1 of polygon 1 [True, 35.4] is not [lon, lat]",
        ),
        ({"type": "Polygon", "coordinates": []}, "feature 1: polygon 1 has no rings"),
        ({"type": "Topology"}, "feature 1: geometry type 'Topology' is not a GeoJSON geometry"),
    ],
)
def test_bad_geometry_reasons(geometry: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_nws_geojson(make_feature(geometry))
    assert str(caught.value) == reason


def test_point_geometry_is_an_unsupported_area() -> None:
    point = {"type": "Point", "coordinates": [-97.5, 35.4]}
    with pytest.raises(UnsupportedArea, match=r"^feature 1: geometry type 'Point' has no area"):
        parse_nws_geojson(make_feature(point))


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        (
            {"messageType": "Foo"},
            "properties.messageType 'Foo' is not one of Alert, Update, Cancel, Ack, Error",
        ),
        ({"status": "Real"}, "properties.status 'Real' is not one of Actual, Exercise"),
        ({"sender": None}, "missing properties.sender"),
        ({"sent": "date:now -1 hour"}, "properties.sent 'date:now -1 hour' is not an ISO-8601"),
        ({"expires": "2026-05-01T12:00:00"}, "properties.expires '2026-05-01T12:00:00' has no UTC"),
        ({"headline": 42}, "properties.headline is int, expected a string"),
        ({"references": [{"identifier": "x"}]}, "reference 1 needs string 'sender', 'identifier'"),
        ({"eventCode": ["SAME"]}, "properties.eventCode is not an object of lists"),
    ],
)
def test_bad_property_reasons_name_the_feature(properties: dict[str, Any], reason: str) -> None:
    collection = {
        "type": "FeatureCollection",
        "features": [make_feature(), make_feature(**properties)],
    }
    with pytest.raises(MalformedEvent) as caught:
        parse_nws_geojson(collection)
    assert str(caught.value).startswith(f"feature 2: {reason}")


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"type": "Topology"}, "NWS GeoJSON 'type' is 'Topology'"),
        (
            {"type": "FeatureCollection", "features": {}},
            "FeatureCollection 'features' is not a list",
        ),
        ({"type": "FeatureCollection", "features": [1]}, "feature 1 is int, not an object"),
        ({"type": "Feature", "properties": None}, "feature 1: 'properties' is missing"),
    ],
)
def test_bad_document_reasons(document: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_nws_geojson(document)
    assert str(caught.value).startswith(reason)


position = st.tuples(
    st.floats(min_value=-180, max_value=180, allow_nan=False),
    st.floats(min_value=-90, max_value=90, allow_nan=False),
)


@given(st.lists(position, min_size=3, max_size=30))
def test_rings_swap_to_lat_lon_and_keep_every_position(points: list[tuple[float, float]]) -> None:
    ring = [[lon, lat] for lon, lat in [*points, points[0]]]
    alert = parse_one(make_feature(polygon(ring)))
    assert alert.areas[0].polygons[0].exterior == tuple((lat, lon) for lon, lat in ring)


# --- regressions found by tests/domain/alerts/test_fuzz.py ------------------------------------


def test_deeply_nested_geometry_collections_are_flattened_not_recursed() -> None:
    # JSON nests these as deep as the decoder allows (512 levels under orjson's limit of
    # 1024); the recursive walk raised RecursionError from about 480.
    square = polygon(SQUARE)
    geometry: dict[str, Any] = {"type": "GeometryCollection", "geometries": [square]}
    for _ in range(2_000):
        geometry = {"type": "GeometryCollection", "geometries": [geometry, square]}
    alert = parse_one(make_feature(geometry))
    assert len(alert.areas[0].polygons) == 2_001


def test_wkt_nested_deeper_than_a_multipolygon_is_malformed() -> None:
    # _wkt_list recursed once per parenthesis: RecursionError for a few thousand.
    props = make_feature()["properties"]
    props["geometry"] = "MULTIPOLYGON " + "(" * 5_000 + "0 0, 1 0, 1 1, 0 0" + ")" * 5_000
    with pytest.raises(MalformedEvent) as caught:
        parse_nws_geojson({"@graph": [props]})
    assert "nests parentheses 5000 deep; a MULTIPOLYGON nests 3" in str(caught.value)
    props["geometry"] = "POLYGON (((-97.5 35.4, -97.2 35.4, -97.2 35.6, -97.5 35.4)))"
    with pytest.raises(MalformedEvent, match="nests parentheses 3 deep; a POLYGON nests 2"):
        parse_nws_geojson({"@graph": [props]})

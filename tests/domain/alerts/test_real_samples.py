"""The parsers against real public messages kept outside the repo in ../shared/samples.

The samples are not copied into the project (see their README); these tests skip when the
folder is absent. Expectations come from reading the sample files and their SOURCES.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.domain.alerts.cap import parse_cap
from pipeline.domain.alerts.nws import parse_nws_geojson
from pipeline.domain.models import Alert, Geocode
from pipeline.errors import MalformedEvent

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"
CAP_DIR = SAMPLES / "cap"
NWS_DIR = SAMPLES / "nws"


def sample_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def require(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")


def cap_sample(prefix: str) -> list[Alert]:
    require(CAP_DIR)
    (path,) = CAP_DIR.glob(f"{prefix}_*.xml")
    return parse_cap(path.read_bytes())


def one(prefix: str) -> Alert:
    (alert,) = cap_sample(prefix)
    return alert


# --- every CAP file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sample_files(CAP_DIR, "*.xml"), ids=lambda p: p.name.split("_", 1)[0]
)
def test_every_cap_sample_parses_except_the_deliberately_malformed_one(path: Path) -> None:
    if path.name.startswith("20_"):
        with pytest.raises(MalformedEvent):
            parse_cap(path.read_bytes())
        return
    alerts = parse_cap(path.read_bytes())
    assert alerts
    for alert in alerts:
        assert alert.identifier and alert.sender
        assert alert.sent_ms > 946_684_800_000, "after 2000-01-01"
        for area in alert.areas:
            for polygon in area.polygons:
                assert polygon.exterior[0] == polygon.exterior[-1]
                assert all(-90 <= lat <= 90 and -180 <= lon <= 180 for lat, lon in polygon.exterior)
        assert len(repr(alert)) < 50_000, "no inline payload leaks into the event"


def test_each_cap_sample_read_by_number_is_one_file() -> None:
    """The file-by-file checks below find their sample by its number: each number they
    read names exactly one file (whatever else the folder holds)."""
    require(CAP_DIR)
    read = [*CHECKS, "20"]
    found = {prefix: sorted(CAP_DIR.glob(f"{prefix}_*.xml")) for prefix in read}
    assert {prefix: len(paths) for prefix, paths in found.items()} == dict.fromkeys(read, 1)


# --- file by file -------------------------------------------------------------------------


def check_01_amber_bilingual(alert: Alert) -> None:
    assert alert.event == "Child Abduction"
    assert alert.event_codes == (Geocode("SAME", "CAE"),)
    assert alert.language == "en-US"
    assert [t.language for t in alert.translations] == ["es-US"]
    assert alert.translations[0].event == "Abducción de Niño"
    assert [a.geocodes for a in alert.areas] == [(Geocode("SAME", "006037"),)]
    assert alert.expires_ms is None


def check_03_polygon(alert: Alert) -> None:
    (area,) = alert.areas
    (polygon,) = area.polygons
    assert len(polygon.exterior) == 5
    assert polygon.exterior[0] == (38.47, -120.14)
    assert [g.value for g in area.geocodes] == ["006109", "006009", "006003"]
    assert alert.event_codes == (Geocode("SAME", "SVR"),)


def check_04_update_circle(alert: Alert) -> None:
    assert alert.msg_type == "Update"
    assert [r.identifier for r in alert.references] == ["TRI13970876.1"]
    (circle,) = alert.areas[0].circles
    assert (circle.lat, circle.lon, circle.radius_km) == (32.9525, -115.5527, 0.0)


def check_05_cancel(alert: Alert) -> None:
    assert alert.msg_type == "Cancel"
    (reference,) = alert.references
    assert reference.identifier == "AS-NV-e18921c7-1b35-4a81-9705-42d25c265ddd"
    assert reference.sender == "bbrundage@dps.state.nv.us"
    assert alert.areas == ()


def check_06_inline_jpeg(alert: Alert) -> None:
    (image,) = alert.images
    assert image.mime_type == "image/jpeg"
    assert image.uri == ""
    assert image.digest.startswith("sha1:") and len(image.digest) == 45
    assert image.size is not None and image.size > 10_000
    assert len(alert.areas[0].polygons[0].exterior) == 41
    assert alert.event_codes == (Geocode("SAME", "LAE"),)


def check_07_audio_only(alert: Alert) -> None:
    assert alert.images == (), "audio resources are not images"
    assert alert.web == "" and alert.instruction == "", "empty elements are absent"
    assert alert.event_codes == (Geocode("SAME", "RMT"),)


def check_08_five_same_codes(alert: Alert) -> None:
    assert [g.value for g in alert.areas[0].geocodes] == [
        "053011",
        "041005",
        "041009",
        "041051",
        "041067",
    ]


def check_09_cap11_empty_polygon(alert: Alert) -> None:
    (area,) = alert.areas
    assert area.polygons == ()
    assert [g.name for g in area.geocodes] == ["FIPS6", "FIPS6", "UGC", "UGC"]


def check_10_three_references(alert: Alert) -> None:
    assert [r.identifier for r in alert.references] == [
        "PAAQ-1-mg5a94",
        "PAAQ-2-mg5a94",
        "PAAQ-3-mg5a94",
    ]
    assert alert.areas[0].circles[0].radius_km == 0.0


def check_11_two_polygons_one_area(alert: Alert) -> None:
    assert len(alert.references) == 8
    (area,) = alert.areas
    assert [len(p.exterior) for p in area.polygons] == [4, 69]


def check_12_bilingual_canada(alert: Alert) -> None:
    assert alert.language == "en-CA"
    assert [t.language for t in alert.translations] == ["fr-CA"]
    (area,) = alert.areas
    assert area.description == "Channel-Port aux Basques and vicinity"
    assert len(area.polygons[0].exterior) == 13


def check_13_many_geocodes(alert: Alert) -> None:
    assert len(alert.areas[0].geocodes) == 50
    assert alert.event_codes == (), "<value></value> is absent"


def check_14_atom_amber(alert: Alert) -> None:
    assert alert.identifier == "http://doj.dc.gov/amber12345"
    assert alert.event_codes == (Geocode("SAME", "CAE"),)
    assert alert.areas[0].geocodes == (Geocode("FIPS6", "006037"),)


def check_15_cap11_amber(alert: Alert) -> None:
    assert alert.headline == "AMBER ALERT"
    assert alert.event_codes == (Geocode("SAME", "CAE"),)


def check_16_update_four_areas(alert: Alert) -> None:
    assert alert.msg_type == "Update"
    assert len(alert.references) == 2
    assert [t.language for t in alert.translations] == ["fr-CA"]
    assert [len(a.polygons[0].exterior) for a in alert.areas] == [17, 38], "fr repeats en"


def check_17_images(alert: Alert) -> None:
    assert [i.mime_type for i in alert.images] == ["image/jpeg", "image/jpeg"]
    assert all(i.uri.startswith("http://newwcatwc.arh.noaa.gov/") for i in alert.images)
    assert alert.web.endswith("WEPA41.txt")


def check_18_prefixed_circles(alert: Alert) -> None:
    circles = [c for area in alert.areas for c in area.circles]
    assert circles and all(c.radius_km == 25.0 for c in circles)
    assert (circles[0].lat, circles[0].lon) == (-35.3888, 147.0598)
    assert alert.categories == ("Fire", "Met")
    assert alert.language == "en-AU"


def check_19_iso_8859_1(alert: Alert) -> None:
    assert alert.headline == "EQ 4.6 Usulután, Usulután, El Salvador - PRELIMINARY REPORT"
    assert "Usulután" in alert.areas[0].description
    assert alert.areas[0].circles[0].radius_km == 0.0


def check_21_geocodes_only(alert: Alert) -> None:
    (area,) = alert.areas
    assert area.geocodes == (Geocode("FIPS6", "030049"), Geocode("UGC", "MTZ014"))


CHECKS: dict[str, Callable[[Alert], None]] = {
    "01": check_01_amber_bilingual,
    "03": check_03_polygon,
    "04": check_04_update_circle,
    "05": check_05_cancel,
    "06": check_06_inline_jpeg,
    "07": check_07_audio_only,
    "08": check_08_five_same_codes,
    "09": check_09_cap11_empty_polygon,
    "10": check_10_three_references,
    "11": check_11_two_polygons_one_area,
    "12": check_12_bilingual_canada,
    "13": check_13_many_geocodes,
    "14": check_14_atom_amber,
    "15": check_15_cap11_amber,
    "16": check_16_update_four_areas,
    "17": check_17_images,
    "18": check_18_prefixed_circles,
    "19": check_19_iso_8859_1,
    "21": check_21_geocodes_only,
}


@pytest.mark.parametrize("prefix", sorted(CHECKS))
def test_cap_sample_content(prefix: str) -> None:
    CHECKS[prefix](one(prefix))


def test_sample_20_names_the_trailing_comma() -> None:
    with pytest.raises(MalformedEvent) as caught:
        cap_sample("20")
    assert str(caught.value) == "point 7 of polygon 1 in area 1 '+40.85,-118.09,' is not 'lat,lon'"


# --- NWS ----------------------------------------------------------------------------------


def untemplate(value: Any) -> Any:
    """weather.gov's test data replaced times with "date:now -1 hour"; pin them instead."""
    if isinstance(value, dict):
        return {k: untemplate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untemplate(v) for v in value]
    if isinstance(value, str) and value.startswith("date:"):
        return "2024-01-08T12:00:00-06:00"
    return value


def nws_sample(prefix: str) -> dict[str, Any]:
    require(NWS_DIR)
    (path,) = NWS_DIR.glob(f"{prefix}_*.json")
    obj = orjson.loads(path.read_bytes())
    assert isinstance(obj, dict)
    return obj


@pytest.mark.parametrize(
    "path", sample_files(NWS_DIR, "*.json"), ids=lambda p: p.name.split("_", 1)[0]
)
def test_every_nws_sample_parses_once_templated_times_are_pinned(path: Path) -> None:
    raw = orjson.loads(path.read_bytes())
    alerts = parse_nws_geojson(untemplate(raw))
    assert len(alerts) == len(raw["features"])
    for alert, feature in zip(alerts, raw["features"], strict=True):
        assert alert.identifier == feature["properties"]["id"]
        if feature["geometry"] is None:
            assert all(area.polygons == () for area in alert.areas)
            if feature["properties"]["geocode"].get("SAME"):
                assert alert.areas[0].geocodes, "null geometry: the area is its geocodes"


def test_nws_01_null_geometry_update_with_four_references() -> None:
    (alert,) = parse_nws_geojson(nws_sample("01"))
    assert alert.msg_type == "Update"
    assert len(alert.references) == 4
    geocodes = alert.areas[0].geocodes
    assert sum(g.name == "SAME" for g in geocodes) == 16
    assert sum(g.name == "UGC" for g in geocodes) == 11
    assert geocodes[0] == Geocode("SAME", "041007")
    assert alert.event == "Flood Watch"


def test_nws_03_empty_geocodes_fall_back_to_affected_zones() -> None:
    alerts = parse_nws_geojson(untemplate(nws_sample("03")))
    by_id = {a.identifier: a for a in alerts}
    flood = by_id["urn:oid:2.49.0.1.840.0.35c08d67b727d304ea1d6ae50eb6139b4be1cc8f.001.1"]
    assert flood.areas[0].geocodes == (Geocode("UGC", "ARZ045"),)
    spray = by_id["urn:oid:2.49.0.1.840.0.edf7c693eacb6f6c34f207d231789f1984baa629.036.2"]
    assert spray.areas[0].geocodes == (), "'AR-MARINE' is not a UGC code"
    assert spray.areas[0].description == "Saint Matthew Island Waters"


def test_nws_02_two_features() -> None:
    assert len(parse_nws_geojson(nws_sample("02"))) == 2


def test_nws_templated_times_are_rejected_with_the_feature_and_field() -> None:
    with pytest.raises(MalformedEvent, match=r"^feature 1: properties\.\w+ 'date:"):
        parse_nws_geojson(nws_sample("03"))


@pytest.mark.parametrize(("prefix", "polygons"), [("03", 1), ("04", 19)])
def test_nws_polygon_features_swap_lon_lat(prefix: str, polygons: int) -> None:
    raw = untemplate(nws_sample(prefix))
    alerts = parse_nws_geojson(raw)
    pairs = [
        (alert, feature)
        for alert, feature in zip(alerts, raw["features"], strict=True)
        if feature["geometry"] is not None
    ]
    assert len(pairs) == polygons
    for alert, feature in pairs:
        ring = feature["geometry"]["coordinates"][0]
        parsed = alert.areas[0].polygons[0].exterior
        assert all(
            math.isclose(lat, raw_lat) and math.isclose(lon, raw_lon)
            for (lat, lon), (raw_lon, raw_lat) in zip(parsed, ring, strict=True)
        )


def test_nws_04_newer_schema_event_codes() -> None:
    alerts = parse_nws_geojson(untemplate(nws_sample("04")))
    assert all(any(c.name == "SAME" for c in a.event_codes) for a in alerts if a.event_codes)
    assert {a.msg_type for a in alerts} == {"Alert", "Update"}

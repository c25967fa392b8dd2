"""``alertfeed expand`` as a person or another tool uses it."""

from __future__ import annotations

import json
from pathlib import Path

import h3
import pytest
from shapely.geometry import shape

from pipeline.entrypoints.cli import main
from tests.support.cli import offline_settings, one_error_line, run_alertfeed
from tests.support.factories import make_cap_xml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cap"
FLORIDA = FIXTURES / "amber_florida_statewide_same.xml"
TWO_AREAS = FIXTURES / "polygon_two_areas.xml"


def covered(cells: list[str], lat: float, lon: float) -> bool:
    """Whether the point lies in a compact cover, decided with h3 alone."""
    return any(h3.latlng_to_cell(lat, lon, h3.get_resolution(c)) == c for c in cells)


def test_json_output_is_one_object_per_alert_in_the_documented_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["expand", str(FLORIDA), "--resolution", "6", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert set(doc) == {"alert_id", "resolution", "cells", "unresolved"}
    assert doc["resolution"] == 6
    assert all(h3.is_valid_cell(c) and h3.get_resolution(c) <= 6 for c in doc["cells"])
    assert covered(doc["cells"], 25.7617, -80.1918)  # Miami
    assert covered(doc["cells"], 30.4383, -84.2807)  # Tallahassee
    assert not covered(doc["cells"], 33.7490, -84.3880)  # Atlanta


def test_summary_png_and_geojson(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, geo = tmp_path / "cover.png", tmp_path / "cover.geojson"
    assert main(["expand", str(TWO_AREAS), "--png", str(png), "--geojson", str(geo)]) == 0
    out = capsys.readouterr().out
    for label in ("areas: 2", "resolution: 10", "compact", "km²", "time:"):
        assert label in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    collection = json.loads(geo.read_text())
    assert collection["type"] == "FeatureCollection"
    polygons = [shape(f["geometry"]) for f in collection["features"]]
    assert polygons and all(p.is_valid for p in polygons)
    # GeoJSON is [lon, lat]: the cover lies around Tampa Bay, not in the Indian Ocean.
    for polygon in polygons:
        lon, lat = polygon.centroid.x, polygon.centroid.y
        assert -83.5 < lon < -82.0 and 27.5 < lat < 29.0


def test_unresolvable_and_malformed_files_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zone_only = tmp_path / "zone.json"
    zone_only.write_text(
        json.dumps(
            {
                "id": "Z1",
                "sender": "s",
                "sent": "2026-11-23T10:00:00Z",
                "status": "Actual",
                "msg_type": "Alert",
                "areas": [{"geocodes": [{"name": "UGC", "value": "TXZ211"}]}],
            }
        )
    )
    assert (
        main(["expand", str(zone_only), str(FIXTURES / "malformed_polygon_three_points.xml")]) == 1
    )
    err = capsys.readouterr().err
    assert "no resolvable area" in err and "TXZ211" in err
    assert "3 points" in err


# name, content (None: do not create it), what the one line must say besides the name.
BAD_FILES: list[tuple[str, bytes | None, tuple[str, ...]]] = [
    ("bogus_encoding.xml", b'<?xml version="1.0" encoding="bogus-8"?>\n<alert/>', ("bogus-8",)),
    ("truncated.xml", (FIXTURES / "malformed_not_xml.xml").read_bytes(), ("not XML",)),
    ("missing.xml", None, ("cannot read", "No such file")),
    ("empty.xml", b"", ("empty",)),
    ("garbage.bin", bytes(range(256)) * 4, ("not CAP XML, NWS GeoJSON or alert JSON",)),
    ("number.json", b"42", ("not CAP XML, NWS GeoJSON or alert JSON",)),
    ("no_area.xml", make_cap_xml(sender="s@example.org"), ("no resolvable area",)),
]


@pytest.mark.parametrize(("name", "content", "reasons"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_the_command_names_a_bad_file_in_one_line_and_still_shows_the_good_one(
    tmp_path: Path, name: str, content: bytes | None, reasons: tuple[str, ...]
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    result = run_alertfeed(
        "expand",
        name,
        str(TWO_AREAS),
        "--resolution",
        "7",
        "--json",
        settings=offline_settings(),
        cwd=tmp_path,
    )
    line = one_error_line(result)
    assert line.startswith(f"alertfeed: {name}: "), line
    for reason in reasons:
        assert reason in line, line
    [shown] = [json.loads(doc) for doc in result.stdout.splitlines()]
    assert shown["resolution"] == 7 and shown["cells"]


def test_a_directory_is_not_an_alert_file(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    result = run_alertfeed("expand", "alerts", settings=offline_settings(), cwd=tmp_path)
    assert one_error_line(result) == "alertfeed: alerts: cannot read: Is a directory"

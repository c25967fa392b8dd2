"""The Census gazetteer against the real 1:500k files shipped by plotly-geo."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.adapters.census import CensusGazetteer, polygons_from_shape
from pipeline.domain.geo.geocodes import resolve_geocodes, resolve_geocodes_with_reasons
from pipeline.domain.models import Geocode, LatLon, Polygon
from pipeline.errors import ConfigurationError

AUSTIN = (30.2672, -97.7431)
HOUSTON = (29.7604, -95.3698)
EL_PASO = (31.7619, -106.4850)
OKLAHOMA_CITY = (35.4676, -97.5164)
SHREVEPORT = (32.5252, -93.7502)
MIAMI = (25.7617, -80.1918)
TALLAHASSEE = (30.4383, -84.2807)
ATLANTA = (33.749, -84.388)
MOBILE = (30.6954, -88.0399)
ANCHORAGE = (61.2181, -149.9003)
ADAK = (51.88, -176.65)
ATTU = (52.93, 173.2)
SEATTLE = (47.6062, -122.3321)
FAIRFAX_CITY = (38.8462, -77.3064)
ANNANDALE = (38.8304, -77.1961)


@pytest.fixture(scope="module")
def gazetteer() -> CensusGazetteer:
    return CensusGazetteer()


def _unwrapped(ring: Sequence[LatLon]) -> list[tuple[float, float]]:
    """(lon, lat) with longitudes made continuous, so a ring across 180° stays one piece."""
    points: list[tuple[float, float]] = []
    for lat, raw_lon in ring:
        lon = raw_lon
        if points:
            while lon - points[-1][0] > 180:
                lon -= 360
            while lon - points[-1][0] < -180:
                lon += 360
        points.append((lon, lat))
    return points


def _area(polygons: Sequence[Polygon]) -> BaseGeometry:
    shapes = [
        ShapelyPolygon(_unwrapped(p.exterior), [_unwrapped(hole) for hole in p.holes])
        for p in polygons
    ]
    return unary_union(shapes)


def _covers(area: BaseGeometry, place: LatLon) -> bool:
    """Whether the place is inside, trying the longitude and its ±360° twins, since an
    unwrapped ring may sit beyond ±180."""
    lat, lon = place
    return any(area.contains(Point(lon + shift, lat)) for shift in (0, 360, -360))


def _vertices(polygons: Sequence[Polygon]) -> int:
    return sum(len(p.exterior) + sum(len(hole) for hole in p.holes) for p in polygons)


def test_texas_whole_state_code_covers_texas_cities_only(gazetteer: CensusGazetteer) -> None:
    polygons, unresolved = resolve_geocodes([Geocode("SAME", "048000")], gazetteer)

    assert unresolved == ()
    assert 12_000 < _vertices(polygons) < 14_000
    texas = _area(polygons)
    assert all(_covers(texas, city) for city in (AUSTIN, HOUSTON, EL_PASO))
    assert not any(_covers(texas, city) for city in (OKLAHOMA_CITY, SHREVEPORT))


def test_florida_whole_state_code_covers_florida_cities_only(gazetteer: CensusGazetteer) -> None:
    polygons, unresolved = resolve_geocodes([Geocode("FIPS6", "012000")], gazetteer)

    assert unresolved == ()
    florida = _area(polygons)
    assert _covers(florida, MIAMI)
    assert _covers(florida, TALLAHASSEE)
    assert not _covers(florida, ATLANTA)
    assert not _covers(florida, MOBILE)


def test_travis_county_code_covers_austin_but_not_houston(gazetteer: CensusGazetteer) -> None:
    for geocode in (Geocode("SAME", "048453"), Geocode("UGC", "TXC453")):
        polygons, unresolved = resolve_geocodes([geocode], gazetteer)

        assert unresolved == ()
        travis = _area(polygons)
        assert _covers(travis, AUSTIN)
        assert not _covers(travis, HOUSTON)


def test_alaska_covers_the_aleutians_on_both_sides_of_the_antimeridian(
    gazetteer: CensusGazetteer,
) -> None:
    polygons, unresolved = resolve_geocodes([Geocode("SAME", "002000")], gazetteer)

    assert unresolved == ()
    assert all(
        -180 <= lon <= 180 for p in polygons for ring in (p.exterior, *p.holes) for _, lon in ring
    )
    alaska = _area(polygons)
    assert all(_covers(alaska, place) for place in (ANCHORAGE, ADAK, ATTU))
    assert not _covers(alaska, SEATTLE)


def test_an_independent_city_is_a_hole_in_its_surrounding_county(
    gazetteer: CensusGazetteer,
) -> None:
    polygons = gazetteer.county("51059")

    assert polygons is not None
    assert any(p.holes for p in polygons)
    fairfax_county = _area(polygons)
    assert _covers(fairfax_county, ANNANDALE)
    assert not _covers(fairfax_county, FAIRFAX_CITY)


def test_territories_resolve_as_states_and_counties(gazetteer: CensusGazetteer) -> None:
    assert {"72", "66", "78", "60", "69", "11"} <= gazetteer.state_codes()
    puerto_rico = gazetteer.state("72")
    assert puerto_rico is not None
    assert _covers(_area(puerto_rico), (18.4655, -66.1057))  # San Juan
    assert gazetteer.county("72001") is not None


def test_codes_without_an_offline_boundary_stay_unresolved(gazetteer: CensusGazetteer) -> None:
    codes = [
        Geocode("SAME", "099000"),
        Geocode("SAME", "148001"),
        Geocode("UGC", "TXZ211"),
        Geocode("SAME", "048999"),
    ]

    resolution = resolve_geocodes_with_reasons(codes, gazetteer)

    assert resolution.polygons == ()
    assert [item.kind for item in resolution.unresolved] == [
        "unknown_state",
        "subdivision",
        "zone",
        "no_boundary",
    ]


def test_unknown_or_ill_formed_keys_give_none(gazetteer: CensusGazetteer) -> None:
    assert gazetteer.state("99") is None
    assert gazetteer.state("4") is None
    assert gazetteer.county("48999") is None
    assert gazetteer.county("TX453") is None


def test_repeated_lookups_return_the_same_boundary(gazetteer: CensusGazetteer) -> None:
    first = gazetteer.state("44")

    assert first is not None
    assert gazetteer.state("44") == first


def test_a_folder_without_the_files_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="missing"):
        CensusGazetteer(package_data=tmp_path)


def test_an_unreadable_file_is_a_configuration_error(tmp_path: Path) -> None:
    for stem in ("cb_2016_us_state_500k", "cb_2016_us_county_500k"):
        for ext in (".shp", ".shx", ".dbf"):
            (tmp_path / f"{stem}{ext}").write_bytes(b"not a shapefile")
    broken = CensusGazetteer(package_data=tmp_path)

    with pytest.raises(ConfigurationError, match="cb_2016_us_state_500k"):
        broken.state("48")


def test_rings_split_into_exteriors_and_the_holes_inside_them() -> None:
    outer = [[0.0, 0.0], [0.0, 10.0], [10.0, 10.0], [10.0, 0.0], [0.0, 0.0]]  # clockwise
    hole = [[2.0, 2.0], [4.0, 2.0], [4.0, 4.0], [2.0, 4.0], [2.0, 2.0]]  # counter-clockwise
    island = [[20.0, 0.0], [20.0, 1.0], [21.0, 1.0], [21.0, 0.0], [20.0, 0.0]]

    polygons = polygons_from_shape(outer + hole + island, [0, 5, 10])

    assert [len(p.holes) for p in polygons] == [1, 0]
    assert polygons[0].exterior[1] == (10.0, 0.0)  # [lon, lat] became (lat, lon)
    assert polygons[0].holes[0][1] == (2.0, 4.0)


def test_longitudes_past_180_wrap_so_the_ring_shows_its_crossing() -> None:
    across = [[179.0, 50.0], [181.0, 50.0], [181.0, 49.0], [179.0, 49.0], [179.0, 50.0]]

    (polygon,) = polygons_from_shape(across, [0])

    longitudes = [lon for _, lon in polygon.exterior]
    assert all(-180 <= lon <= 180 for lon in longitudes)
    assert any(abs(b - a) > 180 for a, b in itertools.pairwise(longitudes))

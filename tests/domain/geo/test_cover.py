"""Area geometry to compact H3 cover: the no-under-targeting contract, the overshoot
bound, compactness, guardrails and the measured descendant margins.

Insideness and "touches" are decided by the independent oracle in ``cover_strategies``
(shapely on the original unwrapped lat/lon geometry, haversine for circles).
"""

from __future__ import annotations

import math
import random

import h3.api.basic_int as h3i
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.domain.geo import geometry as geo
from pipeline.domain.geo.cover import (
    CoverLimits,
    cover_shapes,
    estimate_cover_cells,
    uncompact,
    validate_shapes,
)
from pipeline.domain.models import Circle, Polygon
from pipeline.errors import GuardrailExceeded, MalformedEvent
from tests.domain.geo.cover_strategies import (
    CircleCase,
    PolygonCase,
    cell_outline,
    circle_cases,
    contains_pole,
    destination,
    haversine_km,
    make_polygon,
    polygon_cases,
    polygon_samples,
    radius_deg,
    wrap_lon,
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CELLS_CHECKED = 300  # cells per example checked for (b); each costs a shapely distance


def square(lat: float, lon: float, size: float) -> Polygon:
    return Polygon(((lat, lon), (lat, lon + size), (lat + size, lon + size), (lat + size, lon)))


def assert_compact(cover: frozenset[int], resolution: int) -> set[int]:
    """The cover is already compact and never finer than ``resolution``; returns C_R."""
    assert all(h3i.get_resolution(c) <= resolution for c in cover)
    fine = uncompact(cover, resolution)
    assert set(h3i.compact_cells(list(fine))) == set(cover)
    return fine


def assert_polygon_contract(case: PolygonCase, seed: int) -> None:
    res, oracle = case.resolution, case.oracle
    cover = cover_shapes([case.polygon], [], res)
    fine = assert_compact(cover, res)
    assert len(cover) <= estimate_cover_cells([case.polygon], [], res)

    # (a) every point inside the polygon lies in a covered cell.
    rng = np.random.default_rng(seed)
    points = polygon_samples(oracle, rng)
    missed = [
        (lat, lon)
        for lon, lat in points.tolist()
        if h3i.latlng_to_cell(lat, wrap_lon(lon), res) not in fine
    ]
    assert not missed, f"{len(missed)} inside points not covered, e.g. {missed[:3]}"

    # (b) every covered cell's true region touches the polygon (within 0.5% of its size).
    ref = oracle.centroid.x
    for cell in random.Random(seed).sample(sorted(fine), min(len(fine), CELLS_CHECKED)):
        lons, lats = cell_outline(cell, ref)
        if contains_pole(cell, res):
            pole_lat = 90.0 if lats.mean() > 0 else -90.0
            reach = max(abs(y) for _, y in oracle.exterior.coords)
            assert reach >= np.abs(lats).min() - 1e-9, f"pole cell {cell:x} untouched"
            assert pole_lat * oracle.centroid.y > 0
            continue
        tol = 0.005 * radius_deg(lons, lats) + 1e-9
        outlines = [shapely.Polygon(np.column_stack((lons + s, lats))) for s in (-360, 0, 360)]
        gap = min(shapely.distance(o, oracle) for o in outlines)
        assert gap <= tol, f"cell {cell:x} is {gap} deg from the polygon (tol {tol})"


def assert_circle_contract(case: CircleCase, seed: int) -> None:
    circle, res = case.circle, case.resolution
    cover = cover_shapes([], [circle], res)
    fine = assert_compact(cover, res)
    assert len(cover) <= estimate_cover_cells([], [circle], res)
    center_cell = h3i.latlng_to_cell(circle.lat, circle.lon, res)
    assert center_cell in fine

    # (a) points spread over the disc and hugging its rim are all covered.
    rng = np.random.default_rng(seed)
    n = 1500
    bearing = rng.uniform(0, 2 * math.pi, n)
    frac = np.concatenate(
        [np.sqrt(rng.uniform(0, 1, n // 2)), 1 - rng.uniform(0, 1e-6, n - n // 2)]
    )
    lats, lons = destination(circle.lat, circle.lon, bearing, circle.radius_km * frac)
    for lat, lon in zip(lats.tolist(), lons.tolist(), strict=True):
        assert h3i.latlng_to_cell(lat, wrap_lon(lon), res) in fine, (lat, lon)

    # (b) each covered cell holds the centre or has a boundary point within the radius.
    for cell in random.Random(seed).sample(sorted(fine), min(len(fine), CELLS_CHECKED)):
        if cell == center_cell:
            continue
        lons_c, lats_c = cell_outline(cell, 0.0, parts=64)
        dist = haversine_km(circle.lat, circle.lon, lats_c, lons_c)
        # Boundary samples are exact points of the true edges, at most `spacing` apart.
        spacing = float(
            np.max(haversine_km(lats_c, lons_c, np.roll(lats_c, 1), np.roll(lons_c, 1)))
        )
        assert dist.min() <= circle.radius_km + 0.001 + spacing / 2, f"cell {cell:x} untouched"


@PROPERTY
@given(polygon_cases(), st.integers(0, 2**32 - 1))
def test_polygon_cover_covers_every_inside_point_and_only_touching_cells(
    case: PolygonCase, seed: int
) -> None:
    assert_polygon_contract(case, seed)


@PROPERTY
@given(circle_cases(), st.integers(0, 2**32 - 1))
def test_circle_cover_covers_every_inside_point_and_only_touching_cells(
    case: CircleCase, seed: int
) -> None:
    assert_circle_contract(case, seed)


@settings(max_examples=15, deadline=None)
@given(st.lists(polygon_cases(resolutions=(5,)), min_size=2, max_size=3), st.integers(0, 99))
def test_overlapping_polygons_and_circles_cover_their_union(
    cases: list[PolygonCase], seed: int
) -> None:
    polygons = [c.polygon for c in cases]
    circles = [Circle(c.oracle.centroid.y, wrap_lon(c.oracle.centroid.x), 30.0) for c in cases]
    cover = cover_shapes(polygons, circles, 5)
    fine = assert_compact(cover, 5)
    for case in cases:
        assert uncompact(cover_shapes([case.polygon], [], 5), 5) <= fine
    for circle in circles:
        assert uncompact(cover_shapes([], [circle], 5), 5) <= fine
    singles = set().union(*(uncompact(cover_shapes([p], [], 5), 5) for p in polygons))
    singles |= set().union(*(uncompact(cover_shapes([], [c], 5), 5) for c in circles))
    assert fine == singles


def test_radius_zero_circle_is_exactly_the_centre_cell() -> None:
    for lat, lon, res in ((40.7, -74.0, 9), (89.99, 179.999, 7), (-33.9, 151.2, 12)):
        cover = cover_shapes([], [Circle(lat, lon, 0.0)], res)
        assert cover == {h3i.latlng_to_cell(lat, lon, res)}


def test_two_touching_squares_compact_and_cover_the_shared_edge() -> None:
    left, right = square(30.0, -100.0, 0.5), square(30.0, -99.5, 0.5)
    cover = cover_shapes([left, right], [], 7)
    fine = assert_compact(cover, 7)
    for lat in np.linspace(30.0, 30.5, 50):
        assert h3i.latlng_to_cell(float(lat), -99.5, 7) in fine


def test_antimeridian_polygon_covers_both_sides() -> None:
    polygon, oracle = make_polygon([[(51.0, 172.0), (53.0, 172.0), (53.0, 190.0), (51.0, 190.0)]])
    fine = assert_compact(cover_shapes([polygon], [], 5), 5)
    for lat, lon in ((52.0, 179.9), (52.0, -179.9), (52.0, 175.0), (52.0, -171.0)):
        assert h3i.latlng_to_cell(lat, lon, 5) in fine
    assert h3i.latlng_to_cell(52.0, 0.0, 5) not in fine
    assert oracle.area > 0


def test_ring_around_the_pole_is_a_polar_cap() -> None:
    cap = Polygon(tuple((80.0, lon) for lon in (-180.0, -90.0, 0.0, 90.0)))
    fine = assert_compact(cover_shapes([cap], [], 4), 4)
    rng = np.random.default_rng(1)
    for lat, lon in zip(rng.uniform(80.0, 90.0, 2000), rng.uniform(-180, 180, 2000), strict=True):
        assert h3i.latlng_to_cell(float(lat), float(lon), 4) in fine
    assert h3i.latlng_to_cell(90.0, 0.0, 4) in fine
    assert h3i.latlng_to_cell(70.0, 0.0, 4) not in fine


def test_whole_world_polygon_at_res_10_is_refused_by_the_guardrail() -> None:
    world = Polygon(((-90, -180), (-90, 0), (-90, 180), (90, 180), (90, 0), (90, -180)))
    with pytest.raises(GuardrailExceeded, match="max_cells"):
        cover_shapes([world], [], 10)


def test_whole_world_polygon_at_coarse_res_is_the_res0_cells() -> None:
    world = Polygon(((-90, -180), (-90, 0), (-90, 180), (90, 180), (90, 0), (90, -180)))
    assert cover_shapes([world], [], 3) == set(h3i.get_res0_cells())


def test_too_many_vertices_or_shapes_are_refused() -> None:
    ring = tuple((30.0 + 0.1 * math.sin(a), -100.0 + 0.1 * math.cos(a)) for a in range(600))
    with pytest.raises(GuardrailExceeded, match="vertices"):
        cover_shapes([Polygon(ring)], [], 5, CoverLimits(max_vertices=500))
    with pytest.raises(GuardrailExceeded, match="shapes"):
        cover_shapes([], [Circle(0.0, 0.0, 1.0)] * 3, 5, CoverLimits(max_shapes=2))


def test_cover_over_the_cell_limit_is_refused() -> None:
    with pytest.raises(GuardrailExceeded, match="max_cells"):
        cover_shapes([], [Circle(45.0, 7.0, 50.0)], 9, CoverLimits(max_cells=100))


@pytest.mark.parametrize(
    ("polygons", "circles", "reason"),
    [
        ([Polygon(((math.nan, 0.0), (1.0, 0.0), (1.0, 1.0)))], [], "not finite"),
        ([Polygon(((91.0, 0.0), (1.0, 0.0), (1.0, 1.0)))], [], "latitude"),
        ([Polygon(((0.0, 0.0), (1.0, 181.0), (1.0, 1.0)))], [], "longitude"),
        ([Polygon(((0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0)))], [], "3 distinct"),
        ([], [Circle(0.0, 0.0, -1.0)], "radius"),
        ([], [Circle(0.0, 0.0, math.inf)], "radius"),
        ([], [Circle(0.0, math.nan, 1.0)], "not finite"),
    ],
)
def test_malformed_shapes_are_refused_with_a_precise_reason(
    polygons: list[Polygon], circles: list[Circle], reason: str
) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        validate_shapes(polygons, circles)
    with pytest.raises(MalformedEvent, match=reason):
        cover_shapes(polygons, circles, 5)


def test_no_shapes_give_an_empty_cover() -> None:
    assert cover_shapes([], [], 9) == frozenset()


# ---- the measured margins behind geometry.DESCENDANT_MARGIN and SPHERE_REACH ---------


def _sample_parents() -> list[int]:
    rng = random.Random(7)
    parents = list(h3i.get_res0_cells())
    for res in (1, 3, 6):
        for _ in range(25):
            lat = math.degrees(math.asin(rng.uniform(-1, 1)))
            parents.append(h3i.latlng_to_cell(lat, rng.uniform(-180, 180), res))
    return parents


def test_descendant_margins_cover_the_measured_deviation_with_safety() -> None:
    """Re-measures how far descendants (3 levels down, true great-circle edges included)
    stray from their ancestor's hexagon, as the module comment records."""
    worst_deg = worst_sphere = worst_bulge = 0.0
    for parent in _sample_parents():
        res = h3i.get_resolution(parent)
        batch = geo.cell_batch([parent], res)
        kids = h3i.cell_to_children(parent, res + 3)
        kid_batch = geo.cell_batch(kids, res + 3)
        ref = float(shapely.get_coordinates(batch.pieces[0])[:, 0].mean())
        outline = np.concatenate([cell_outline(k, ref, parts=2) for k in kids], axis=1)
        if not batch.polar[0]:
            dist = shapely.distance(batch.pieces[0], shapely.points(outline[0], outline[1]))
            worst_deg = max(worst_deg, float(dist.max() / batch.radius_deg[0]))
            bulge = geo.edge_bulge(kid_batch, np.arange(len(kids)))
            ratio = bulge / kid_batch.radius_deg
            worst_bulge = max(worst_bulge, float(ratio[~kid_batch.polar].max(initial=0.0)))
        sphere = geo.cell_sphere(batch, np.arange(1))
        lat, lon = outline[1], outline[0]
        units = np.column_stack(
            (
                np.cos(np.radians(lat)) * np.cos(np.radians(lon)),
                np.cos(np.radians(lat)) * np.sin(np.radians(lon)),
                np.sin(np.radians(lat)),
            )
        )
        angle = np.arccos(np.clip(units @ sphere.center_unit[0], -1, 1)).max()
        worst_sphere = max(worst_sphere, float(angle / sphere.radius_rad[0]))
    # Measured: ~0.17 (degree frame), ~1.05 (sphere); require a 1.5x safety factor.
    assert worst_deg > 0.1 and 1.5 * worst_deg <= geo.DESCENDANT_MARGIN
    assert worst_sphere > 1.0 and 1.0 + 1.5 * (worst_sphere - 1.0) <= geo.SPHERE_REACH
    assert 1.5 * worst_bulge <= geo.BULGE_BOUND

"""Shape factories, hypothesis strategies and an independent oracle for the cover tests.

Nothing here imports ``pipeline.domain.geo.cover`` or ``pipeline.domain.geo.geometry``: the
oracle decides insideness and "touches" on its own, so the tests cannot inherit a bug
from the implementation.

Test shapes are drawn in an *unwrapped* frame (longitudes may run past +-180) and
converted to the model's wrapped ``(lat, lon)`` only for ``cover_shapes``; the oracle
keeps the unwrapped shapely geometry, which is how an antimeridian-crossing area is
judged without re-implementing the split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import shapely
from hypothesis import strategies as st

from pipeline.domain.models import Circle, Polygon

EARTH_KM = 6371.0088  # the oracle's own sphere, the IUGG mean radius


@dataclass(frozen=True)
class PolygonCase:
    """A polygon as the model carries it, its unwrapped oracle geometry and a resolution."""

    polygon: Polygon
    oracle: Any  # shapely Polygon, x = unwrapped lon, y = lat
    resolution: int


@dataclass(frozen=True)
class CircleCase:
    circle: Circle
    resolution: int


def wrap_lon(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0


def make_polygon(
    rings: Sequence[Sequence[tuple[float, float]]],
) -> tuple[Polygon, Any]:
    """Model polygon (wrapped lons) and oracle (unwrapped) from unwrapped (lat, lon) rings,
    the first the exterior, the others holes."""
    wrapped = [tuple((lat, wrap_lon(lon)) for lat, lon in ring) for ring in rings]
    oracle = shapely.Polygon(
        [(lon, lat) for lat, lon in rings[0]],
        [[(lon, lat) for lat, lon in hole] for hole in rings[1:]],
    )
    return Polygon(exterior=wrapped[0], holes=tuple(wrapped[1:])), oracle


def edge_km(resolution: int) -> float:
    return float(h3i.average_hexagon_edge_length(resolution, "km"))


@st.composite
def polygon_cases(draw: st.DrawFn, resolutions: Sequence[int] = (2, 4, 6, 8)) -> PolygonCase:
    """Star-shaped polygons (convex when all radii are equal, concave otherwise), from
    under a cell to ~150 cells across, optionally with a hole, anywhere on the globe:
    across the antimeridian and within a degree of the poles included."""
    res = draw(st.sampled_from(resolutions))
    size_km = edge_km(res) * draw(st.floats(0.2, 150.0))
    region = draw(st.sampled_from(["any", "antimeridian", "polar"]))
    if region == "antimeridian":
        clat = draw(st.floats(-70.0, 70.0))
        clon = draw(st.sampled_from([180.0, -180.0])) + draw(st.floats(-0.5, 0.5)) * size_km / 111
    elif region == "polar":
        clat = draw(st.sampled_from([1.0, -1.0])) * draw(st.floats(80.0, 89.9))
        clon = draw(st.floats(-180.0, 180.0))
    else:
        clat = draw(st.floats(-75.0, 75.0))
        clon = draw(st.floats(-180.0, 180.0))
    half_lat = min(size_km / 111.2, 20.0)
    half_lat = min(half_lat, 89.999 - abs(clat)) if abs(clat) + half_lat >= 90.0 else half_lat
    half_lat = max(half_lat, 1e-4)
    half_lon = min(size_km / (111.2 * max(math.cos(math.radians(abs(clat) + half_lat)), 0.02)), 60)
    n = draw(st.integers(3, 12))
    convex = draw(st.booleans())
    radii = [1.0] * n if convex else draw(st.lists(st.floats(0.3, 1.0), min_size=n, max_size=n))
    phase = draw(st.floats(0.0, 2 * math.pi))
    angles = [phase + 2 * math.pi * k / n for k in range(n)]

    def ring(scale: Sequence[float]) -> list[tuple[float, float]]:
        return [
            (clat + s * half_lat * math.sin(a), clon + s * half_lon * math.cos(a))
            for s, a in zip(scale, angles, strict=True)
        ]

    rings = [ring(radii)]
    if n >= 4 and draw(st.booleans()):
        rings.append(ring([0.25 * r for r in radii])[::-1])
    polygon, oracle = make_polygon(rings)
    return PolygonCase(polygon=polygon, oracle=oracle, resolution=res)


@st.composite
def circle_cases(draw: st.DrawFn, resolutions: Sequence[int] = (3, 5, 7, 9)) -> CircleCase:
    """Geodesic circles of radius 0 up to ~150 cells, anywhere: across the antimeridian
    and around the poles (a pole inside the circle) included."""
    res = draw(st.sampled_from(resolutions))
    region = draw(st.sampled_from(["any", "antimeridian", "polar", "zero"]))
    radius = 0.0 if region == "zero" else edge_km(res) * draw(st.floats(0.05, 150.0))
    if region == "antimeridian":
        lat, lon = draw(st.floats(-80.0, 80.0)), draw(st.sampled_from([179.99, -179.99, 180.0]))
    elif region == "polar":
        lat = draw(st.sampled_from([1.0, -1.0])) * draw(st.floats(85.0, 90.0))
        lon = draw(st.floats(-180.0, 180.0))
    else:
        lat, lon = draw(st.floats(-89.0, 89.0)), draw(st.floats(-180.0, 180.0))
    return CircleCase(circle=Circle(lat=lat, lon=lon, radius_km=radius), resolution=res)


# ---- the oracle -------------------------------------------------------------------


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def destination(lat: float, lon: float, bearing: Any, dist_km: Any) -> tuple[Any, Any]:
    """Points at ``dist_km`` along ``bearing`` (radians) from (lat, lon), on the sphere."""
    d = np.asarray(dist_km) / EARTH_KM
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = np.arcsin(math.sin(p1) * np.cos(d) + math.cos(p1) * np.sin(d) * np.cos(bearing))
    l2 = l1 + np.arctan2(
        np.sin(bearing) * np.sin(d) * math.cos(p1), np.cos(d) - math.sin(p1) * np.sin(p2)
    )
    return np.degrees(p2), np.degrees(l2)


def polygon_samples(oracle: Any, rng: np.random.Generator, count: int = 1500) -> Any:
    """Points (lon, lat) in the unwrapped frame, strictly inside the oracle polygon: half
    uniform over its bounds, half hugging its rings (where under-targeting would hide)."""
    minx, miny, maxx, maxy = oracle.bounds
    xs = rng.uniform(minx, maxx, count)
    ys = rng.uniform(miny, maxy, count)
    rings = [oracle.exterior, *oracle.interiors]
    along = [ring.interpolate(rng.uniform(0, ring.length, count // len(rings))) for ring in rings]
    edge = shapely.get_coordinates(np.concatenate([np.atleast_1d(a) for a in along]))
    scale = max(maxx - minx, maxy - miny)
    jitter = (
        rng.normal(0.0, 1.0, edge.shape) * scale * rng.choice([1e-3, 1e-6, 1e-9], (len(edge), 1))
    )
    points = np.vstack([np.column_stack((xs, ys)), edge + jitter])
    points = points[(points[:, 1] >= -90.0) & (points[:, 1] <= 90.0)]
    inside = shapely.contains_xy(oracle, points[:, 0], points[:, 1])
    return points[inside]


def cell_outline(cell: int, ref_lon: float, parts: int = 32) -> tuple[Any, Any]:
    """(lons, lats) of a cell's true boundary, ``parts`` points per great-circle edge,
    longitudes made continuous and shifted by a multiple of 360 near ``ref_lon``."""
    boundary = np.radians(np.array(h3i.cell_to_boundary(cell)))
    lat, lon = boundary[:, 0], boundary[:, 1]
    v = np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))
    w = np.roll(v, -1, axis=0)
    t = (np.arange(parts) / parts)[None, :, None]
    pts = v[:, None, :] * (1 - t) + w[:, None, :] * t
    pts = (pts / np.linalg.norm(pts, axis=2, keepdims=True)).reshape(-1, 3)
    lats = np.degrees(np.arcsin(np.clip(pts[:, 2], -1, 1)))
    lons = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    lons = np.unwrap(lons, period=360.0)
    return lons + 360.0 * round((ref_lon - lons.mean()) / 360.0), lats


def contains_pole(cell: int, resolution: int) -> bool:
    return any(h3i.latlng_to_cell(lat, 0.0, resolution) == cell for lat in (90, -90))


def radius_deg(lons: Any, lats: Any) -> float:
    return float(np.max(np.hypot(lons - lons.mean(), lats - lats.mean())))

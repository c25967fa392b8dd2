"""Geometry behind the H3 cover: alert shapes and H3 cells in one comparable form.

Two frames are used, each where it is exact:

* **Polygons** live in the *degree frame*: ``x = lon``, ``y = lat`` in degrees, because
  alert polygon edges are straight lines in latitude/longitude (as h3 treats them). All
  polygon geometry is restricted *periodically* to the box ``[-180, 180] x [-90, 90]``:
  a ring whose longitudes jump by more than 180 degrees is unwrapped into one continuous
  ring and the parts beyond +-180 are shifted back by 360, so an antimeridian-crossing
  area becomes pieces on both edges of the box. A ring that winds once around the globe
  (its unwrapped longitudes end 360 degrees from where they began) encloses a pole; it
  is closed through the pole nearer to it (the sign of its mean latitude).
* **Circles** are geodesic, so they are compared with cells on the sphere (unit
  vectors), where a cap and a cell's great-circle edges have exact distances. No circle
  is ever approximated by a polygon, so circles need no antimeridian or pole handling.

H3 cells are Python ints from ``h3.api.basic_int`` (the package-wide convention, see
``pipeline.domain.models``); here they are turned into numpy/shapely arrays in batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import shapely

from pipeline.domain.models import LatLon, Polygon

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.intp]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

# Mean Earth radius (IUGG). Geodesic circle radii are measured on this sphere.
EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180.0

WORLD_BOX = shapely.box(-180.0, -90.0, 180.0, 90.0)

# H3 is not geometrically hierarchical: the union of a cell's descendants (Gosper-island
# like) sticks out of the parent's hexagon. Measured in the degree frame as
#   max over descendants' vertices and great-circle edge points of
#   distance(point, parent hexagon) / parent degree-radius (CellBatch.radius_deg)
# over all 122 res-0 cells, 120 random res-1 cells and ~600 random and polar cells at
# res 2, 3, 5, 8, 11, descending 3-4 levels (the ratio stops growing after 3 levels):
#   0.159-0.163 away from the poles, 0.173 at 3-5 edge lengths from a pole,
#   0.20-0.21 within 1-3 edge lengths, ~1.0 for the cells right around the pole cell.
# Cells within POLAR_ZONE_EDGES edge lengths of a pole are therefore never classified
# (always refined); everywhere else a 0.30 margin gives a safety factor of ~1.7.
# tests/domain/geo/test_cover.py re-measures this and checks the factor.
DESCENDANT_MARGIN = 0.30
POLAR_ZONE_EDGES = 3.0

# The same deviation on the sphere: descendants of a cell lie within
# max angle(centre, descendant point) / spherical radius <= 1.056 (measured as above, all
# res-0 cells plus 500+ cells at res 1-10, 3 levels down, pole cells included).
SPHERE_REACH = 1.15

# h3's true cell edges are great-circle arcs; in the degree frame they stray from the
# chords between h3's vertices by at most ~0.04 cell radii outside the polar zone
# (measured with the descendant margin above, as the 0-level deviation), usually far
# less (~1e-5 at resolution 10). Only cells nearer than this bound to a polygon's
# outline (and polar cells) need their true, densified edges tested (true_pieces).
BULGE_BOUND = 0.25

# Slack for floating point in "touches" tests, in radians (~6 micrometres).
ANGLE_EPS = 1e-12


def unwrap_ring(ring: Sequence[LatLon]) -> tuple[FloatArray, FloatArray, int]:
    """Return ``(xs, ys, winding)`` of a ring: longitudes made continuous (every step
    below 180 degrees), starting at the first vertex's longitude, and how many times the
    closed ring goes around the globe (0, or +-1 for a ring around a pole)."""
    pts = np.asarray(ring, dtype=np.float64)
    ys, lons = pts[:, 0], pts[:, 1]
    steps = _short_steps(np.diff(lons))
    xs = lons[0] + np.concatenate(([0.0], np.cumsum(steps)))
    closing = _short_steps(np.array([lons[0] - lons[-1]]))[0]
    winding = round((xs[-1] + closing - xs[0]) / 360.0)
    return xs, ys, winding


def ring_problem(ring: Sequence[LatLon]) -> str | None:
    """Why a ring cannot describe an area on the globe, or None if it can: it winds
    around the globe more than once, or spans over 360 degrees of longitude without
    winding (it would overlap itself)."""
    xs, _, winding = unwrap_ring(ring)
    if abs(winding) > 1:
        return f"ring winds {abs(winding)} times around the globe"
    if winding == 0 and xs.max() - xs.min() > 360.0:
        return "ring spans more than 360 degrees of longitude"
    return None


def ring_region(ring: Sequence[LatLon]) -> Any:
    """The area a ring encloses, periodically restricted to the world box.

    Raises ``ValueError`` for rings that cannot describe an area on the globe: winding
    more than once, or spanning more than 360 degrees of longitude without winding.
    """
    xs, ys, winding = unwrap_ring(ring)
    problem = ring_problem(ring)
    if problem:
        raise ValueError(problem)
    if winding == 0:
        region = shapely.Polygon(np.column_stack((xs, ys)))
    else:
        pole = 90.0 if ys.mean() >= 0.0 else -90.0
        end = xs[0] + 360.0 * winding
        path = np.column_stack((np.append(xs, end), np.append(ys, ys[0])))
        region = shapely.Polygon(np.vstack((path, [[end, pole], [xs[0], pole]])))
    if not region.is_valid:
        # Self-intersecting rings (bow ties) are read as GEOS's make_valid reads them:
        # every part the linework encloses, like an even-odd point-in-polygon test.
        region = _polygonal(shapely.make_valid(region))
    return periodic_restrict(region)


def polygon_region(polygon: Polygon) -> Any:
    """The area of an alert polygon (holes removed) in the world box."""
    region = ring_region(polygon.exterior)
    if polygon.holes:
        holes = shapely.union_all([ring_region(hole) for hole in polygon.holes])
        region = shapely.difference(region, holes)
    return region


def periodic_restrict(geometry: Any) -> Any:
    """Pieces of ``geometry`` (and of its copies shifted by +-360) inside the world box.

    Inputs span at most [-540, 540], so shifts by -360, 0 and 360 see all of them."""
    minx, _, maxx, _ = geometry.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return geometry
    pieces = []
    for shift in (-360.0, 0.0, 360.0):
        if maxx + shift > -180.0 and minx + shift < 180.0:
            pieces.append(shapely.intersection(shifted(geometry, shift), WORLD_BOX))
    return _polygonal(shapely.union_all(pieces))


def periodic_outline(region: Any) -> Any:
    """The outline of a world-box region, without the seams at +-180 where the region
    continues across the antimeridian (they are not edges of the area on the globe)."""
    minx, _, maxx, _ = region.bounds
    if minx > -180.0 and maxx < 180.0:
        return shapely.boundary(region)
    copies = [shifted(region, shift) for shift in (-360.0, 0.0, 360.0)]
    joined = shapely.union_all(copies)
    return shapely.intersection(shapely.boundary(joined), shapely.box(-360.0, -91.0, 360.0, 91.0))


def shifted(geometry: Any, dx: float) -> Any:
    """``geometry`` (or an array of them) moved by ``dx`` degrees of longitude."""
    offset = np.array([dx, 0.0])
    return shapely.transform(geometry, lambda coords: coords + offset)


def _polygonal(geometry: Any) -> Any:
    parts = shapely.get_parts(geometry)
    polys = [p for p in parts if shapely.get_type_id(p) in (3, 6)]
    return shapely.union_all(polys) if polys else shapely.Polygon()


def _short_steps(steps: FloatArray) -> FloatArray:
    """Longitude steps as the model reads them: a jump of *more* than 180 degrees
    crosses the antimeridian; exactly 180 is taken as written."""
    short: FloatArray = steps - 360.0 * np.sign(steps) * (np.abs(steps) > 180.0)
    return short


def _wrap180(values: FloatArray) -> FloatArray:
    wrapped: FloatArray = (values + 180.0) % 360.0 - 180.0
    return wrapped


@cache
def pole_cells(resolution: int) -> frozenset[int]:
    """The two cells of a resolution that contain a pole (their rings wind in longitude)."""
    return frozenset(h3i.latlng_to_cell(lat, 0.0, resolution) for lat in (90.0, -90.0))


@dataclass(frozen=True, slots=True)
class CellBatch:
    """Geometry of a batch of same-resolution cells, as parallel arrays.

    ``pieces`` are the cells' hexagons in the degree frame (chords between h3's
    vertices), each owned by ``piece_owner``; a cell crossing +-180 has a second piece
    shifted by 360, and a pole cell is a cap closed through its pole. ``center_*`` and
    ``radius_deg`` bound each hexagon by a disk in the degree frame; ``polar`` marks the
    cells too close to a pole for that frame's margins. ``lat``/``lon`` hold h3's
    vertices flat, cell ``i`` at ``start[i] : start[i] + counts[i]``.
    """

    size: int
    pieces: Any
    piece_owner: IntArray
    center_x: FloatArray
    center_y: FloatArray
    radius_deg: FloatArray
    polar: BoolArray
    lat: FloatArray
    lon: FloatArray
    start: IntArray
    counts: IntArray


@dataclass(frozen=True, slots=True)
class CellSphere:
    """Some cells of a batch on the unit sphere: centre (vertex mean), radius (max
    angle to a vertex) and vertices padded to ``MAX_VERTS`` by repeating the last one."""

    center_unit: FloatArray  # (m, 3)
    radius_rad: FloatArray  # (m,)
    vertex_unit: FloatArray  # (m, MAX_VERTS, 3)


MAX_VERTS = 10  # hexagons have 6, pentagons 5, cells cut by icosahedron edges up to 10


def cell_batch(cells: Sequence[int], resolution: int) -> CellBatch:
    """Build the degree-frame geometry of ``cells`` (all at ``resolution``) in one pass."""
    n = len(cells)
    bounds = [h3i.cell_to_boundary(c) for c in cells]
    counts = np.fromiter(map(len, bounds), dtype=np.intp, count=n)
    total = int(counts.sum())
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(bounds)), np.float64, 2 * total)
    lat, lon = flat[0::2], flat[1::2]
    owner = np.repeat(np.arange(n), counts)
    start = np.zeros(n, dtype=np.intp)
    start[1:] = np.cumsum(counts)[:-1]

    # Unwrap each ring around its first vertex: a cell that does not contain a pole spans
    # under 180 degrees of longitude, so this makes every non-pole hexagon continuous.
    ref = lon[start][owner]
    x = ref + _wrap180(lon - ref)
    center_x = np.bincount(owner, x, n) / counts
    center_y = np.bincount(owner, lat, n) / counts
    radius_deg = np.maximum.reduceat(np.hypot(x - center_x[owner], lat - center_y[owner]), start)

    poles = pole_cells(resolution)
    is_pole = np.fromiter((c in poles for c in cells), dtype=np.bool_, count=n)
    edge_km = h3i.average_hexagon_edge_length(resolution, "km")
    polar = (90.0 - np.abs(center_y)) * KM_PER_DEGREE < POLAR_ZONE_EDGES * edge_km
    polar |= is_pole

    plain = ~is_pole[owner]
    plain_owner = np.flatnonzero(~is_pole)
    rank = np.searchsorted(plain_owner, owner[plain])
    rings = shapely.linearrings(np.column_stack((x[plain], lat[plain])), indices=rank)
    pieces = [shapely.polygons(rings)]
    piece_owner = [plain_owner]
    minx = np.minimum.reduceat(x, start)[plain_owner]
    maxx = np.maximum.reduceat(x, start)[plain_owner]
    for crossing, shift in ((maxx > 180.0, -360.0), (minx < -180.0, 360.0)):
        if crossing.any():
            pieces.append(shifted(pieces[0][crossing], shift))
            piece_owner.append(plain_owner[crossing])
    for i in np.flatnonzero(is_pole):
        pieces.append(np.array([ring_region(bounds[i])], dtype=object))
        piece_owner.append(np.array([i]))
        center_x[i], center_y[i] = 0.0, math.copysign(90.0, center_y[i])
    return CellBatch(
        size=n,
        pieces=np.concatenate(pieces),
        piece_owner=np.concatenate(piece_owner),
        center_x=_wrap180(center_x),
        center_y=center_y,
        radius_deg=radius_deg,
        polar=polar,
        lat=lat,
        lon=lon,
        start=start,
        counts=counts,
    )


def _padded(batch: CellBatch, idx: IntArray) -> tuple[IntArray, BoolArray]:
    """Flat vertex indices of cells ``idx`` as (m, MAX_VERTS), last vertex repeated."""
    slot = np.arange(MAX_VERTS)[None, :]
    counts = batch.counts[idx][:, None]
    padded: IntArray = batch.start[idx][:, None] + np.minimum(slot, counts - 1)
    return padded, slot < counts


def cell_sphere(batch: CellBatch, idx: IntArray) -> CellSphere:
    """The cells ``idx`` of ``batch`` on the unit sphere."""
    padded, real = _padded(batch, idx)
    vertices = _unit(batch.lat[padded], batch.lon[padded])
    center = _normalize(np.sum(vertices * real[..., None], axis=1))
    radius = _angle(vertices, center[:, None, :]).max(axis=1)
    return CellSphere(center_unit=center, radius_rad=radius, vertex_unit=vertices)


def edge_bulge(batch: CellBatch, idx: IntArray) -> FloatArray:
    """Per cell ``idx``, how far h3's great-circle edges stray from the degree chords.

    Compares points at 1/4, 1/2 and 3/4 along each great-circle edge with the chord
    points at the same fraction (an over-estimate of the distance to the chord) and
    doubles the worst one, since the true maximum may fall between the samples."""
    padded, _ = _padded(batch, idx)
    lat, lon = batch.lat[padded], batch.lon[padded]
    lat2, lon2 = np.roll(lat, -1, axis=1), np.roll(lon, -1, axis=1)
    a, b = _unit(lat, lon), _unit(lat2, lon2)
    dlon = _wrap180(lon2 - lon)
    worst = np.zeros(lat.shape)
    for t in (0.25, 0.5, 0.75):
        arc = _normalize(a * (1.0 - t) + b * t)
        arc_lat = np.degrees(np.arcsin(np.clip(arc[..., 2], -1.0, 1.0)))
        arc_lon = np.degrees(np.arctan2(arc[..., 1], arc[..., 0]))
        gap = np.hypot(_wrap180(arc_lon - (lon + t * dlon)), arc_lat - (lat + t * (lat2 - lat)))
        worst = np.maximum(worst, gap)
    bulge: FloatArray = 2.0 * worst.max(axis=1)
    return bulge


DENSIFY = 32  # great-circle points per h3 edge in true_pieces


def true_pieces(batch: CellBatch, idx: IntArray) -> tuple[Any, IntArray, FloatArray]:
    """Cells ``idx`` as degree-frame polygons through DENSIFY points per great-circle
    edge: ``(pieces, owner, slack)``. The sub-chords stray from h3's true edges by under
    1/DENSIFY**2 of the whole-edge bulge, which ``slack`` (per cell) bounds."""
    padded, _ = _padded(batch, idx)
    a = _unit(batch.lat[padded], batch.lon[padded])
    b = np.roll(a, -1, axis=1)
    t = (np.arange(DENSIFY) / DENSIFY)[None, None, :, None]
    points = _normalize(a[:, :, None, :] * (1.0 - t) + b[:, :, None, :] * t)
    points = points.reshape(len(idx), -1, 3)
    lat = np.degrees(np.arcsin(np.clip(points[..., 2], -1.0, 1.0)))
    lon = np.degrees(np.arctan2(points[..., 1], points[..., 0]))
    x = batch.center_x[idx][:, None] + _wrap180(lon - batch.center_x[idx][:, None])
    polar = batch.polar[idx]
    pieces = [shapely.polygons(np.stack((x, lat), axis=-1)[~polar])]
    owner = [idx[~polar]]
    for beyond, shift in ((x.max(axis=1) > 180.0, -360.0), (x.min(axis=1) < -180.0, 360.0)):
        crossing = beyond & ~polar
        if crossing.any():
            pieces.append(shapely.polygons(np.stack((x + shift, lat), axis=-1)[crossing]))
            owner.append(idx[crossing])
    for k in np.flatnonzero(polar):
        # Near a pole the hexagon may span any longitude range, or wind around the pole.
        ring = list(zip(lat[k].tolist(), lon[k].tolist(), strict=True))
        pieces.append(np.array([ring_region(ring)], dtype=object))
        owner.append(idx[k : k + 1])
    slack = 2.0 * edge_bulge(batch, idx) / DENSIFY**2 + 1e-12
    return np.concatenate(pieces), np.concatenate(owner), slack


def circle_units(lats: FloatArray, lons: FloatArray) -> FloatArray:
    """Unit vectors of circle centres (or any points) given in degrees."""
    return _unit(lats, lons)


def center_angles(sphere: CellSphere, centers: FloatArray) -> FloatArray:
    """Angles (radians) between each cell's centre and each of ``centers``: shape (m, k).

    Uses the chord form so small angles keep their precision to ~1e-9 rad."""
    dot = sphere.center_unit @ centers.T
    chord = np.sqrt(np.clip(2.0 - 2.0 * dot, 0.0, 4.0))
    angles: FloatArray = 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
    return angles


def cell_cap_distance(vertices: FloatArray, points: FloatArray) -> FloatArray:
    """Angular distance from each point to the *boundary* of its cell.

    ``vertices`` is (p, MAX_VERTS, 3) of cells (padded), ``points`` (p, 3); the cell's
    edges are great-circle arcs, as in h3. Exact up to floating point."""
    a = vertices
    b = np.roll(vertices, -1, axis=1)
    q = points[:, None, :]
    normal = np.cross(a, b)
    norm = np.linalg.norm(normal, axis=2, keepdims=True)
    degenerate = norm[..., 0] < 1e-15
    nhat = normal / np.where(norm < 1e-15, 1.0, norm)
    s = np.sum(q * nhat, axis=2)
    proj = q - s[..., None] * nhat
    on_arc = (np.sum(np.cross(a, proj) * nhat, axis=2) >= 0.0) & (
        np.sum(np.cross(proj, b) * nhat, axis=2) >= 0.0
    )
    to_line = np.arcsin(np.clip(np.abs(s), 0.0, 1.0))
    to_ends = np.minimum(_angle(a, q), _angle(b, q))
    dist = np.where(on_arc & ~degenerate, to_line, to_ends)
    closest: FloatArray = dist.min(axis=1)
    return closest


def _unit(lat: FloatArray, lon: FloatArray) -> FloatArray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack((np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)), axis=-1)


def _normalize(v: FloatArray) -> FloatArray:
    out: FloatArray = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def _angle(u: FloatArray, v: FloatArray) -> FloatArray:
    """Angle between unit vectors along the last axis, precise for tiny angles."""
    chord = np.linalg.norm(u - v, axis=-1)
    out: FloatArray = 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
    return out

"""Alert area geometry (polygons and geodesic circles) to a compact H3 cover.

Contract of :func:`cover_shapes`, with ``C`` its result and ``C_R`` every
resolution-``R`` descendant of ``C``:

(a) **No under-targeting, ever**: every point inside any shape lies in a cell of ``C_R``,
    i.e. ``h3.latlng_to_cell(lat, lon, R)`` is in ``C_R``.
(b) Every cell of ``C_R`` touches at least one shape, so the overshoot is under one cell.
    "Touches" is judged on h3's true cells, whose edges are great-circle arcs (they stray
    from the straight lat/lon chords of ``h3.cell_to_boundary`` by millimetres at
    resolution 10, by kilometres for coarse cells): polygons are compared with the edges
    densified to ``geometry.DENSIFY`` points, circles exactly on the sphere.

Algorithm (no fine interior enumeration, no ``polygon_to_cells``): walk down from the
res-0 cells. Each cell is *inside* (kept whole), *outside* (dropped) or on the
*boundary* (refined into its children). Because a cell's descendants stick out of its
hexagon, the inside/outside tests widen each hexagon by the measured descendant margin
(``geometry.DESCENDANT_MARGIN``, ``geometry.SPHERE_REACH``); at ``R`` a boundary cell is
kept iff it truly touches a shape. Kept cells are finally compacted bottom-up.

Circles are geodesic caps tested with exact spherical distances rather than inflated
polygons: an inflated polygon would keep cells the true circle misses, breaking (b), and
would need its own antimeridian and pole handling.

Cells are Python ints of ``h3.api.basic_int`` throughout (see ``pipeline.domain.models``):
the int API avoids hex-string parsing on every h3 call and packs into numpy arrays.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import shapely

from pipeline.domain.checks import check_lat_lon
from pipeline.domain.geo import geometry as geo
from pipeline.domain.models import Circle, Polygon
from pipeline.errors import GuardrailExceeded, MalformedEvent

MAX_RESOLUTION = 15

# Compact cover cells per edge-length of shape outline, as an upper-bound estimate. Both
# the boundary band at R and the partial parents above it scale with outline / edge:
# Texas measures 0.62 at res 7 and 0.84 at res 10; the property tests check the bound.
ESTIMATE_CELLS_PER_EDGE = 2.5

# From this resolution on, a cell whose chord hexagon meets a polygon is kept without
# checking its true (great-circle) edges: they stray from the chords by under ~4e-5 of
# the cell's radius there (bulge/radius shrinks ~2.6x per resolution from ~0.04 at
# res 0), i.e. ~2 mm at res 10. Coarser covers are cheap, so they are judged exactly.
CHORD_FAST_PATH_FROM = 7

# Cells classified per vectorized batch: large enough to amortize numpy and GEOS
# overhead, small enough to bound memory whatever the frontier size.
BATCH = 16_384


@dataclass(frozen=True, slots=True)
class CoverLimits:
    """Guardrails of one alert. Exceeding any raises :class:`GuardrailExceeded`."""

    max_vertices: int = 500_000  # total polygon vertices in one alert
    max_shapes: int = 1_000  # polygons + circles
    max_cells: int = 3_000_000  # compact cells in the resulting cover


def cover_shapes(
    polygons: Sequence[Polygon],
    circles: Sequence[Circle],
    resolution: int,
    limits: CoverLimits = CoverLimits(),
) -> frozenset[int]:
    """Compact H3 cover (ints) of the union of the shapes at ``resolution``.

    Promises contract (a) and (b) of this module; no cell is finer than ``resolution``,
    no cell nests in another, and the set is maximally compact: ``h3.compact_cells`` of
    its uncompaction returns it unchanged (``compact_cells`` itself only takes cells of
    one resolution, so it refuses the mixed-resolution result as such). No shapes give
    an empty cover.

    Raises :class:`GuardrailExceeded` when the alert is over ``limits`` (checked on the
    counts first, then on :func:`estimate_cover_cells`, then while refining), and
    :class:`MalformedEvent` for invalid shapes (see :func:`validate_shapes`).
    ``ValueError`` for a resolution outside 0-15, which is the caller's configuration.
    """
    if not 0 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"H3 resolution must be 0-{MAX_RESOLUTION}, got {resolution}")
    _check_counts(polygons, circles, limits)
    validate_shapes(polygons, circles)
    estimate = estimate_cover_cells(polygons, circles, resolution)
    if estimate > limits.max_cells:
        raise GuardrailExceeded(
            f"cover estimate {estimate} cells at resolution {resolution} "
            f"exceeds max_cells={limits.max_cells}"
        )
    if not polygons and not circles:
        return frozenset()
    area = _Area.build(polygons, circles, resolution)
    return _compact(_refine(area, resolution, limits), resolution, limits)


def validate_shapes(polygons: Iterable[Polygon], circles: Iterable[Circle]) -> None:
    """Raise :class:`MalformedEvent` naming the first invalid shape and why: a
    coordinate that is NaN/infinite or out of range (lat -90..90, lon -180..180), a
    negative or non-finite radius, a ring with fewer than 3 distinct points, or a ring
    that cannot enclose an area on the globe (winds around it more than once)."""
    for i, polygon in enumerate(polygons):
        for j, ring in enumerate((polygon.exterior, *polygon.holes)):
            where = f"polygon {i} " + ("exterior" if j == 0 else f"hole {j - 1}")
            for lat, lon in ring:
                check_lat_lon(lat, lon, where)
            if len(set(ring)) < 3:
                raise MalformedEvent(f"{where}: ring has fewer than 3 distinct points")
            problem = geo.ring_problem(ring)
            if problem:
                raise MalformedEvent(f"{where}: {problem}")
    for i, circle in enumerate(circles):
        check_lat_lon(circle.lat, circle.lon, f"circle {i}")
        if not math.isfinite(circle.radius_km) or circle.radius_km < 0.0:
            raise MalformedEvent(f"circle {i}: radius {circle.radius_km!r} km is not >= 0")


def estimate_cover_cells(
    polygons: Sequence[Polygon], circles: Sequence[Circle], resolution: int
) -> int:
    """Cheap upper-bound estimate of the compact cover size, O(vertices).

    Polygon outlines are measured in degrees times km-per-degree, which over-counts
    longitude away from the equator (a deliberate upper bound; it also gives a world-box
    polygon its 120,000 km outline so it is refused at fine resolutions)."""
    edge_km = h3i.average_hexagon_edge_length(resolution, "km")
    outline_km = 0.0
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.holes):
            xs, ys, winding = geo.unwrap_ring(ring)
            closed_x = np.append(xs, xs[0] + 360.0 * winding)
            closed_y = np.append(ys, ys[0])
            steps = np.hypot(np.diff(closed_x), np.diff(closed_y))
            outline_km += float(steps.sum()) * geo.KM_PER_DEGREE
    for circle in circles:
        angle = min(circle.radius_km / geo.EARTH_RADIUS_KM, math.pi)
        outline_km += 2.0 * math.pi * geo.EARTH_RADIUS_KM * math.sin(angle)
    shapes = len(polygons) + len(circles)
    return math.ceil(ESTIMATE_CELLS_PER_EDGE * outline_km / float(edge_km)) + 7 * shapes


def uncompact(cells: Iterable[int], resolution: int) -> set[int]:
    """Every resolution-``resolution`` descendant of ``cells`` (none may be finer)."""
    return set(h3i.uncompact_cells(list(cells), resolution))


def _check_counts(
    polygons: Sequence[Polygon], circles: Sequence[Circle], limits: CoverLimits
) -> None:
    shapes = len(polygons) + len(circles)
    if shapes > limits.max_shapes:
        raise GuardrailExceeded(f"{shapes} shapes exceed max_shapes={limits.max_shapes}")
    vertices = sum(len(p.exterior) + sum(len(h) for h in p.holes) for p in polygons)
    if vertices > limits.max_vertices:
        raise GuardrailExceeded(
            f"{vertices} polygon vertices exceed max_vertices={limits.max_vertices}"
        )


@dataclass(frozen=True, slots=True)
class _Area:
    """The alert's shapes, prepared for batch predicates.

    Polygons become one prepared area in the world box (union, so overlapping polygons
    and pieces split at +-180 answer point queries correctly) plus its prepared outline.
    Circles stay exact: centres as unit vectors and radii as angles."""

    region: Any  # prepared shapely geometry, or None without polygons
    outline: Any
    lat_range: tuple[float, float]
    centers: geo.FloatArray  # (k, 3)
    radii: geo.FloatArray  # (k,) radians
    center_cells: np.ndarray[Any, np.dtype[np.int64]]

    @staticmethod
    def build(polygons: Sequence[Polygon], circles: Sequence[Circle], resolution: int) -> _Area:
        region = outline = None
        lat_range = (90.0, -90.0)
        if polygons:
            region = shapely.union_all([geo.polygon_region(p) for p in polygons])
            outline = geo.periodic_outline(region)
            shapely.prepare(region)
            shapely.prepare(outline)
            if not region.is_empty:
                lat_range = (region.bounds[1], region.bounds[3])
        lats = np.array([c.lat for c in circles], dtype=np.float64)
        lons = np.array([c.lon for c in circles], dtype=np.float64)
        radii = np.array([c.radius_km for c in circles], dtype=np.float64)
        cells = [h3i.latlng_to_cell(c.lat, c.lon, resolution) for c in circles]
        return _Area(
            region=region,
            outline=outline,
            lat_range=lat_range,
            centers=geo.circle_units(lats, lons).reshape(-1, 3),
            radii=np.minimum(radii / geo.EARTH_RADIUS_KM, math.pi),
            center_cells=np.array(cells, dtype=np.int64),
        )

    def classify(self, batch: geo.CellBatch) -> tuple[geo.BoolArray, geo.BoolArray]:
        """``(inside, boundary)`` masks of a batch at a resolution coarser than the
        target; cells in neither are outside. Inside means every descendant at every
        finer resolution lies within a shape; outside, none touches one."""
        inside = np.zeros(batch.size, dtype=np.bool_)
        boundary = np.zeros(batch.size, dtype=np.bool_)
        if self.region is not None:
            margin = geo.DESCENDANT_MARGIN * batch.radius_deg[batch.piece_owner]
            close = shapely.dwithin(self.outline, batch.pieces, margin)
            boundary[batch.piece_owner[close]] = True
            # Polar cells are too distorted in the degree frame for the margin: refine
            # them unless even their spherical reach stays clear of the polygons' band.
            polar = np.flatnonzero(batch.polar)
            if len(polar):
                sphere = geo.cell_sphere(batch, polar)
                lat = np.degrees(np.arcsin(np.clip(sphere.center_unit[:, 2], -1.0, 1.0)))
                reach = np.degrees(geo.SPHERE_REACH * sphere.radius_rad)
                low, high = self.lat_range
                boundary[polar[(lat + reach >= low) & (lat - reach <= high)]] = True
            within = shapely.contains_xy(self.region, batch.center_x, batch.center_y)
            inside |= ~boundary & ~batch.polar & within
        if len(self.radii):
            sphere = geo.cell_sphere(batch, np.arange(batch.size))
            angles = geo.center_angles(sphere, self.centers)
            reach = geo.SPHERE_REACH * sphere.radius_rad[:, None]
            inside |= (angles + reach <= self.radii).any(axis=1)
            boundary |= (angles - reach <= self.radii).any(axis=1)
        return inside, boundary & ~inside

    def touches(self, batch: geo.CellBatch, cells: Sequence[int], resolution: int) -> geo.BoolArray:
        """Mask of the cells (at the target resolution) whose true region touches a shape."""
        hit = np.zeros(batch.size, dtype=np.bool_)
        if self.region is not None:
            owner = batch.piece_owner
            rest = np.arange(len(owner))
            if resolution >= CHORD_FAST_PATH_FROM:
                # A hexagon whose chords meet the area is kept without densifying: its
                # true edges are within ~1e-4 radii of the chords (see the constant).
                fast = shapely.intersects(self.region, batch.pieces) & ~batch.polar[owner]
                hit[owner[fast]] = True
                rest = np.flatnonzero(~hit[owner])
            # h3's edges bulge past the chords by less than BULGE_BOUND radii (polar
            # cells excepted), so only pieces that close to the outline can touch.
            crude = geo.BULGE_BOUND * batch.radius_deg[owner[rest]]
            near = shapely.dwithin(self.outline, batch.pieces[rest], crude)
            rest = rest[near | batch.polar[owner[rest]]]
            cells_near = np.unique(owner[rest])
            if len(cells_near):
                pieces, piece_owner, slack = geo.true_pieces(batch, cells_near)
                per_piece = slack[np.searchsorted(cells_near, piece_owner)]
                touch = shapely.dwithin(self.region, pieces, per_piece)
                hit[piece_owner[touch]] = True
            if resolution < CHORD_FAST_PATH_FROM:
                # Cells wholly inside the area, away from its outline.
                far = np.ones(batch.size, dtype=np.bool_)
                far[owner[near]] = False
                far &= ~batch.polar
                hit |= far & shapely.contains_xy(self.region, batch.center_x, batch.center_y)
            # A pole cell lies in the polar cap above its lowest vertex (its great-circle
            # edges bulge poleward), and meets every meridian; so it touches the area
            # exactly when the area reaches that cap. The degree frame's slack is far too
            # generous there (found by the property test with a triangle 0.1 deg from it).
            poles = geo.pole_cells(resolution)
            for i, cell in enumerate(cells):
                if cell in poles:
                    edge = min(abs(lat) for lat, _ in h3i.cell_to_boundary(cell))
                    north = h3i.cell_to_latlng(cell)[0] > 0
                    cap = (
                        shapely.box(-540.0, edge, 540.0, 90.0)
                        if north
                        else shapely.box(-540.0, -90.0, 540.0, -edge)
                    )
                    hit[i] = bool(shapely.intersects(self.region, cap))
        if len(self.radii):
            sphere = geo.cell_sphere(batch, np.arange(batch.size))
            angles = geo.center_angles(sphere, self.centers)
            reach = geo.SPHERE_REACH * sphere.radius_rad[:, None]
            rows, cols = np.nonzero(angles - reach <= self.radii)
            if len(rows):
                dist = geo.cell_cap_distance(sphere.vertex_unit[rows], self.centers[cols])
                close = dist <= self.radii[cols] * (1.0 + 1e-12) + geo.ANGLE_EPS
                hit[rows[close]] = True
            # A circle smaller than its cell touches no edge: its centre's cell holds it.
            hit |= np.isin(np.array(cells, dtype=np.int64), self.center_cells)
        return hit


def _refine(area: _Area, resolution: int, limits: CoverLimits) -> dict[int, list[int]]:
    """Kept cells by resolution; every kept cell satisfies the module contract and no
    kept cell is an ancestor of another (the walk never descends into a kept cell).
    Complete sibling sets at ``resolution`` are already replaced by their parent."""
    kept: dict[int, list[int]] = defaultdict(list)
    count = 0
    frontier: list[int] = list(h3i.get_res0_cells())
    parents: list[int] = []  # parent of each frontier cell; siblings are contiguous
    for res in range(resolution + 1):
        children: list[int] = []
        child_parents: list[int] = []
        hits: list[bool] = []
        for chunk in _batches(frontier):
            batch = geo.cell_batch(chunk, res)
            if res == resolution:
                hit = area.touches(batch, chunk, res)
                hits.extend(hit.tolist())
                count += int(hit.sum())
            else:
                inside, boundary = area.classify(batch)
                kept[res].extend(c for c, k in zip(chunk, inside.tolist(), strict=True) if k)
                count += int(inside.sum())
                for cell, refine in zip(chunk, boundary.tolist(), strict=True):
                    if refine:
                        kids = h3i.cell_to_children(cell, res + 1)
                        children.extend(kids)
                        child_parents.extend([cell] * len(kids))
            _check_running(count, len(children), res, limits)
        if res == resolution:
            _keep_final(kept, res, frontier, parents, hits)
        frontier, parents = children, child_parents
    return kept


def _keep_final(
    kept: dict[int, list[int]], res: int, cells: list[int], parents: list[int], hits: list[bool]
) -> None:
    """Keep the hit cells of the last level, or their parent when every sibling is hit
    (the frontier holds all children of each refined parent, side by side)."""
    if res == 0:
        kept[0].extend(c for c, h in zip(cells, hits, strict=True) if h)
        return
    for parent, group in groupby(zip(parents, cells, hits, strict=True), key=itemgetter(0)):
        members = list(group)
        if all(h for _, _, h in members):
            kept[res - 1].append(parent)
        else:
            kept[res].extend(c for _, c, h in members if h)


def _check_running(kept: int, frontier: int, res: int, limits: CoverLimits) -> None:
    # Every frontier cell lies within a fraction of its own size of a shape's outline,
    # and about a third of them end up in the cover; a frontier over twice the budget is
    # refused before it is refined further, which is what bounds memory.
    if kept > limits.max_cells or frontier > 2 * limits.max_cells:
        raise GuardrailExceeded(
            f"cover refinement at resolution {res} reached {kept} cells "
            f"(+{frontier} to refine), over max_cells={limits.max_cells}"
        )


def _batches(cells: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(cells), BATCH):
        yield cells[start : start + BATCH]


def _compact(kept: dict[int, list[int]], resolution: int, limits: CoverLimits) -> frozenset[int]:
    """Replace every complete set of siblings by its parent, finest level first, so the
    result equals ``h3.compact_cells`` of its own uncompaction (kept cells never nest)."""
    for res in range(resolution - 1, 0, -1):  # _refine merged the finest level
        by_parent: dict[int, list[int]] = defaultdict(list)
        for cell in kept.get(res, ()):
            by_parent[h3i.cell_to_parent(cell, res - 1)].append(cell)
        remaining: list[int] = []
        for parent, siblings in by_parent.items():
            if len(siblings) >= 6 and len(siblings) == h3i.cell_to_children_size(parent, res):
                kept[res - 1].append(parent)
            else:
                remaining.extend(siblings)
        kept[res] = remaining
    cover = frozenset(c for cells in kept.values() for c in cells)
    if len(cover) > limits.max_cells:
        raise GuardrailExceeded(
            f"cover has {len(cover)} cells at resolution {resolution}, "
            f"over max_cells={limits.max_cells}"
        )
    return cover

"""Covers are pure functions of their shapes: compute each once.

A state-wide AMBER Alert (SAME 048000) is a common alert, and its area is always the same
census boundary, yet covering Texas at resolution 10 takes seconds: seconds before the
first card of the fan-out. :func:`cached_cover` keys a cover by a digest of exactly what
determines it (the shapes' coordinates, the resolution, the guardrails and the algorithm
version), so a hit is byte-for-byte the cover :func:`cover_shapes` would compute, and a
change of boundary data or of the algorithm is a miss, never a stale answer.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from pipeline.domain.geo.cover import CoverLimits, cover_shapes
from pipeline.domain.models import Circle, Polygon
from pipeline.domain.ports import CoverCache

# Bump when cover_shapes can give a different answer for the same input.
COVER_ALGORITHM = b"alertfeed.cover/1"


def cover_key(
    polygons: Sequence[Polygon], circles: Sequence[Circle], resolution: int, limits: CoverLimits
) -> str:
    """Hex digest of everything :func:`cover_shapes` depends on."""
    digest = hashlib.sha256(COVER_ALGORITHM)
    digest.update(
        struct.pack("<4q", resolution, limits.max_vertices, limits.max_shapes, limits.max_cells)
    )
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.holes):
            # Each ring: its length, then its coordinates (so ring boundaries are unambiguous).
            digest.update(struct.pack("<cq", b"r", len(ring)))
            digest.update(struct.pack(f"<{2 * len(ring)}d", *(v for p in ring for v in p)))
        digest.update(b"p")
    for circle in circles:
        digest.update(struct.pack("<c3d", b"c", circle.lat, circle.lon, circle.radius_km))
    return digest.hexdigest()


def cached_cover(
    cache: CoverCache | None,
    polygons: Sequence[Polygon],
    circles: Sequence[Circle],
    resolution: int,
    limits: CoverLimits,
) -> frozenset[int]:
    """:func:`cover_shapes`, through ``cache`` when there is one. Shapes that fail
    validation or a guardrail raise as they would uncached (failures are not cached)."""
    if cache is None:
        return cover_shapes(polygons, circles, resolution, limits)
    key = cover_key(polygons, circles, resolution, limits)
    cells = cache.get(key)
    if cells is None:
        cells = cover_shapes(polygons, circles, resolution, limits)
        cache.put(key, cells)
    return cells

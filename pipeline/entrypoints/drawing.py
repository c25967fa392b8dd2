"""Draws alert areas and their covers to a PNG (headless matplotlib), for people to look at."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import h3.api.basic_int as h3i

if TYPE_CHECKING:
    from pipeline.entrypoints.expand import Expansion

_EARTH_KM = 6371.0088
# A coarse cell's hexagon is not the region its descendants tile (they stick out in places
# and leave slivers in others), so coarse cells are drawn as their children at this level.
_DRAW_RESOLUTION = 6


def _circle_ring(
    lat: float, lon: float, radius_km: float, steps: int = 72
) -> list[tuple[float, float]]:
    d = radius_km / _EARTH_KM
    la, lo = math.radians(lat), math.radians(lon)
    ring = []
    for i in range(steps + 1):
        b = 2 * math.pi * i / steps
        lat2 = math.asin(math.sin(la) * math.cos(d) + math.cos(la) * math.sin(d) * math.cos(b))
        lon2 = lo + math.atan2(
            math.sin(b) * math.sin(d) * math.cos(la), math.cos(d) - math.sin(la) * math.sin(lat2)
        )
        ring.append((math.degrees(lat2), math.degrees(lon2)))
    return ring


def draw_png(expansions: list[Expansion], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    fig, ax = plt.subplots(figsize=(10, 10), dpi=120)
    for e in expansions:
        hexes = []
        drawn: list[int] = []
        for cell in e.cover.cells:
            if h3i.get_resolution(cell) < _DRAW_RESOLUTION:
                drawn.extend(h3i.cell_to_children(cell, _DRAW_RESOLUTION))
            else:
                drawn.append(cell)
        for cell in drawn:
            boundary = h3i.cell_to_boundary(cell)
            lons = [lon for _, lon in boundary]
            if max(lons) - min(lons) > 180:  # cell across the antimeridian: unwrap it
                boundary = [(lat, lon + 360 if lon < 0 else lon) for lat, lon in boundary]
            hexes.append([(lon, lat) for lat, lon in boundary])
        ax.add_collection(
            PolyCollection(hexes, facecolors="#ff8c0055", edgecolors="#ff8c00", linewidths=0.2)
        )
        for area in e.alert.areas:
            for poly in area.polygons:
                for ring in (poly.exterior, *poly.holes):
                    ax.plot([p[1] for p in ring], [p[0] for p in ring], color="black", lw=0.8)
            for circle in area.circles:
                outline = _circle_ring(circle.lat, circle.lon, circle.radius_km)
                ax.plot([p[1] for p in outline], [p[0] for p in outline], color="black", lw=0.8)
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    titles = ", ".join(f"{e.alert.identifier} (res {e.cover.resolution})" for e in expansions)
    ax.set_title(f"alertfeed cover: {titles}"[:120])
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)

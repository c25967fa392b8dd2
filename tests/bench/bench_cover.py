"""Benchmark: Texas (SAME 048000) to a compact H3 cover.

Times ``cover_shapes`` at resolution 10 against a same-run baseline: h3's own
``polygon_to_cells_experimental(..., contain="overlap")`` plus ``compact_cells`` at
resolution 7 (the finest at which the baseline finishes in reasonable time).

``run(report)`` is the harness entry point; run this file directly to print the lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import h3.api.basic_int as h3i

from pipeline.domain.cover import cover_shapes
from pipeline.domain.models import Geocode, Polygon

Report = Callable[[str, float, str, float], None]

TEXAS = Geocode("SAME", "048000")
OUR_RESOLUTION = 10
BASELINE_RESOLUTION = 7


def texas_polygons() -> tuple[Polygon, ...]:
    """Texas from the census adapter when it is there, else straight from plotly-geo."""
    try:
        from pipeline.adapters.census import CensusGazetteer
    except ImportError:
        return _texas_from_shapefile()
    gazetteer = CensusGazetteer()
    resolve = getattr(gazetteer, "resolve", None)
    if resolve is not None:
        resolved = resolve(TEXAS)
        if resolved:
            return tuple(resolved)
    state = getattr(gazetteer, "state", None)
    if state is not None:
        polygons = state("48")
        if polygons:
            return tuple(polygons)
    return _texas_from_shapefile()


def _texas_from_shapefile() -> tuple[Polygon, ...]:
    import _plotly_geo
    import shapefile

    path = Path(_plotly_geo.__file__).parent / "package_data" / "cb_2016_us_state_500k.shp"
    reader = shapefile.Reader(str(path))
    names = [field[0] for field in reader.fields[1:]]
    for shape_record in reader.iterShapeRecords():
        if dict(zip(names, shape_record.record, strict=True))["STATEFP"] != "48":
            continue
        shape = shape_record.shape
        bounds = [*shape.parts, len(shape.points)]
        # Shapefile rings are [lon, lat]; Texas has no holes, every part is an island.
        return tuple(
            Polygon(tuple((lat, lon) for lon, lat in shape.points[a:b]))
            for a, b in pairwise(bounds)
        )
    raise LookupError("Texas (STATEFP 48) not found in the plotly-geo state shapefile")


def _h3_shape(polygons: Sequence[Polygon]) -> h3i.LatLngMultiPoly:
    return h3i.LatLngMultiPoly(*(h3i.LatLngPoly(list(p.exterior), *p.holes) for p in polygons))


def run(report: Report) -> None:
    polygons = texas_polygons()

    start = time.perf_counter()
    baseline = h3i.polygon_to_cells_experimental(
        _h3_shape(polygons), BASELINE_RESOLUTION, contain="overlap"
    )
    baseline_cells = h3i.compact_cells(list(set(baseline)))
    baseline_s = time.perf_counter() - start

    start = time.perf_counter()
    cover = cover_shapes(polygons, [], OUR_RESOLUTION)
    ours_s = time.perf_counter() - start

    report(
        f"cover_shapes Texas res {OUR_RESOLUTION} ({len(cover)} compact cells)",
        ours_s,
        f"h3 overlap+compact res {BASELINE_RESOLUTION} ({len(baseline_cells)} compact cells)",
        baseline_s,
    )


def _print_report(name: str, value_s: float, baseline_name: str, baseline_s: float) -> None:
    print(
        f"{name}: {value_s:.2f} s | baseline {baseline_name}: {baseline_s:.2f} s "
        f"| ratio {value_s / baseline_s:.2f}"
    )


if __name__ == "__main__":
    run(_print_report)

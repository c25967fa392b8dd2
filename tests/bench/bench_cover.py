"""Benchmark: Texas (SAME 048000) to a compact H3 cover.

Times ``cover_shapes`` at resolution 10 against a same-run baseline: h3's own
``polygon_to_cells_experimental(..., contain="overlap")`` plus ``compact_cells`` at
resolution 7 (the finest at which the baseline finishes in reasonable time).

``run(report)`` is the harness entry point; run this file directly to print the lines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import h3.api.basic_int as h3i

from pipeline.adapters.census import CensusGazetteer
from pipeline.domain.geo.cover import cover_shapes
from pipeline.domain.geo.geocodes import resolve_geocodes_with_reasons
from pipeline.domain.models import Geocode, Polygon
from tests.bench.common import Report, print_report

TEXAS = Geocode("SAME", "048000")
OUR_RESOLUTION = 10
BASELINE_RESOLUTION = 7


def texas_polygons() -> tuple[Polygon, ...]:
    """Texas (SAME 048000) as the pipeline resolves it: the Census 1:500k boundary."""
    resolution = resolve_geocodes_with_reasons([TEXAS], CensusGazetteer())
    assert not resolution.unresolved, resolution.unresolved
    return resolution.polygons


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
        f"cover_shapes Texas (SAME 048000) res {OUR_RESOLUTION} ({len(cover)} compact cells)",
        ours_s,
        "s",
        f"h3 polygon_to_cells_experimental(overlap)+compact_cells res {BASELINE_RESOLUTION} "
        f"({len(baseline_cells)} compact cells)",
        baseline_s,
    )


if __name__ == "__main__":
    run(print_report)

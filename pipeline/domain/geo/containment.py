"""How much of one compact H3 cover lies outside another, and how large a cover is.

Covers are compact sets of cells (mixed resolutions, none finer than ``resolution``; see
:mod:`pipeline.domain.geo.cover`). :func:`cells_outside` counts, at ``resolution``, the
cells of one cover that no cell of the other contains, stopping once it passes ``limit``:
an authority's alert whose cover reaches more than a cell outside the authority's own
cover is refused, so the count only needs to be exact up to that point.
"""

from __future__ import annotations

from collections.abc import Iterable

import h3.api.basic_int as h3


def cells_outside(cells: Iterable[int], within: frozenset[int], resolution: int, limit: int) -> int:
    """The number of ``resolution`` cells of the compact cover ``cells`` that are outside
    the compact cover ``within``, counted up to the first value above ``limit``."""
    levels = sorted({h3.get_resolution(c) for c in within})
    outside = 0
    stack = list(cells)
    while stack and outside <= limit:
        cell = stack.pop()
        res = h3.get_resolution(cell)
        if any(level <= res and h3.cell_to_parent(cell, level) in within for level in levels):
            continue  # inside: it or an ancestor is in the other cover
        if res >= resolution:
            outside += 1
        elif any(level > res for level in levels):
            stack.extend(h3.cell_to_children(cell, res + 1))  # may be partly inside
        else:
            outside += h3.cell_to_children_size(cell, resolution)
    return outside


def cover_area_km2(cells: Iterable[int]) -> float:
    """The area of a compact cover, in km²."""
    return float(sum(h3.cell_area(cell, "km^2") for cell in cells))

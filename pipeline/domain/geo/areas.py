"""An alert's areas to its one compact H3 cover.

Within one ``<area>``, polygons and circles are the precise target. Geocodes are CAP's
"equivalent description": they count only for an area with no polygon and no circle, as
WEA does. The alert's cover is the union over its areas. Geocodes that cannot be resolved
are reported on the cover, never dropped silently; an alert with no resolvable area at all
is rejected (UnsupportedArea), and so is one whose polygons enclose no area (an empty cover).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.domain.geo.cover import CoverLimits
from pipeline.domain.geo.covercache import cached_cover
from pipeline.domain.geo.geocodes import GeocodeResolution
from pipeline.domain.models import Alert, AlertCover, Circle, Geocode, Polygon
from pipeline.domain.ports import CoverCache
from pipeline.errors import UnsupportedArea

GeocodeResolver = Callable[[Sequence[Geocode]], GeocodeResolution]

# Unresolved geocodes named in the reason of a rejection: an alert may list hundreds.
REASONS_SHOWN = 5


def cover_alert(
    alert: Alert,
    *,
    resolution: int,
    limits: CoverLimits,
    resolve_geocodes: GeocodeResolver,
    cache: CoverCache | None = None,
) -> AlertCover:
    polygons: list[Polygon] = []
    circles: list[Circle] = []
    coded: list[Geocode] = []
    for area in alert.areas:
        if area.polygons or area.circles:
            polygons.extend(area.polygons)
            circles.extend(area.circles)
        else:
            coded.extend(area.geocodes)
    unresolved: tuple[Geocode, ...] = ()
    reasons: list[str] = []
    if coded:
        resolution_ = resolve_geocodes(coded)
        polygons.extend(resolution_.polygons)
        unresolved = resolution_.unresolved_geocodes
        reasons = [item.reason for item in resolution_.unresolved]
    if not polygons and not circles:
        why = "; ".join(reasons[:REASONS_SHOWN]) if reasons else "no polygon, circle or geocode"
        if len(reasons) > REASONS_SHOWN:
            why += f"; and {len(reasons) - REASONS_SHOWN} more unresolved geocodes"
        raise UnsupportedArea(f"alert has no resolvable area: {why}")
    cells = cached_cover(cache, polygons, circles, resolution, limits)
    if not cells:
        # A circle always covers its centre's cell, so only polygons without area get
        # here: installed, such an alert would say "issued" and reach nobody.
        raise UnsupportedArea(
            "alert has no resolvable area: its polygons enclose no area "
            "(all points on one line, or holes that cover the whole polygon)"
        )
    return AlertCover(resolution=resolution, cells=cells, unresolved=unresolved)

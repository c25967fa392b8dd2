"""Rules that every input format shares, each in one place with one wording of its error.

CAP, NWS GeoJSON, alert JSON, the cover's own shape checks and location events all read
coordinates; :func:`check_lat_lon` is the one rule for them.
"""

from __future__ import annotations

import math

from pipeline.domain.models import LatLon
from pipeline.errors import MalformedEvent

LAT_MIN, LAT_MAX = -90.0, 90.0
LON_MIN, LON_MAX = -180.0, 180.0


def check_lat_lon(lat: float, lon: float, where: str) -> LatLon:
    """Return ``(lat, lon)``, or raise :class:`MalformedEvent`:
    ``coordinate (nan, 0.0) is not finite in <where>``, ``latitude 95.0 out of range in
    <where>`` or ``longitude -190.0 out of range in <where>``."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise MalformedEvent(f"coordinate ({lat!r}, {lon!r}) is not finite in {where}")
    if not LAT_MIN <= lat <= LAT_MAX:
        raise MalformedEvent(f"latitude {lat} out of range in {where}")
    if not LON_MIN <= lon <= LON_MAX:
        raise MalformedEvent(f"longitude {lon} out of range in {where}")
    return (lat, lon)

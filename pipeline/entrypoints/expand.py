"""``alertfeed expand FILE... [--resolution R] [--json] [--png PATH] [--geojson PATH]``.

Shows the H3 cover an alert file (CAP XML, NWS GeoJSON or alert JSON) would get, without
Kafka or Redis. ``--json`` prints one object per alert, in a shape other tools read::

    {"alert_id": ..., "resolution": R, "cells": [compact cover, H3 hex], "unresolved": [...]}

A file that cannot be read or parsed, or whose cover is refused, gets one line on stderr
(``alertfeed: FILE: reason``); the other files are still shown, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3i
import orjson

from pipeline.domain.alerts.formats import parse_alert_message
from pipeline.domain.geo.geocodes import UnresolvedGeocode, classify_geocode
from pipeline.domain.models import Alert, AlertCover
from pipeline.entrypoints.input_files import parse_file
from pipeline.entrypoints.wiring import make_coverer
from pipeline.errors import BadInput, InputFileError
from pipeline.settings import Settings


@dataclass(frozen=True)
class Expansion:
    source: str
    alert: Alert
    cover: AlertCover
    seconds: float

    @property
    def full_cells(self) -> int:
        r = self.cover.resolution
        return sum(int(h3i.cell_to_children_size(c, r)) for c in self.cover.cells)

    @property
    def area_km2(self) -> float:
        return sum(float(h3i.cell_area(c, "km^2")) for c in self.cover.cells)

    def unresolved(self) -> list[dict[str, str]]:
        out = []
        for code in self.cover.unresolved:
            verdict = classify_geocode(code)
            reason = verdict.reason if isinstance(verdict, UnresolvedGeocode) else "no boundary"
            out.append({"name": code.name, "value": code.value, "reason": reason})
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert.identifier,
            "resolution": self.cover.resolution,
            "cells": sorted(h3i.int_to_str(c) for c in self.cover.cells),
            "unresolved": self.unresolved(),
        }


def run_expand(settings: Settings, args: argparse.Namespace) -> int:
    resolution = settings.match.resolution if args.resolution is None else args.resolution
    cover = make_coverer(settings, resolution)
    expansions: list[Expansion] = []
    failed = 0
    for name in args.files:
        try:
            alerts = parse_file(name, parse_alert_message)
            for alert in alerts:
                started = time.perf_counter()
                result = cover(alert)
                expansions.append(Expansion(name, alert, result, time.perf_counter() - started))
        except InputFileError as exc:
            failed += 1
            print(f"alertfeed: {exc}", file=sys.stderr)
        except BadInput as exc:  # parsed, but the cover is refused
            failed += 1
            print(f"alertfeed: {name}: rejected ({exc.reason_class}): {exc}", file=sys.stderr)
    for expansion in expansions:
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(expansion.to_json()) + b"\n")
        else:
            print(summary(expansion))
    if args.geojson:
        Path(args.geojson).write_bytes(orjson.dumps(geojson(expansions)))
        print(f"wrote {args.geojson}", file=sys.stderr)
    if args.png:
        from pipeline.entrypoints.drawing import draw_png

        draw_png(expansions, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 1 if failed else 0


def summary(e: Expansion) -> str:
    areas = e.alert.areas
    shapes = sum(len(a.polygons) + len(a.circles) for a in areas)
    codes = sum(len(a.geocodes) for a in areas)
    lines = [
        f"{e.source}: {e.alert.identifier} ({e.alert.msg_type}, {e.alert.status}) {e.alert.event}",
        f"  areas: {len(areas)} ({shapes} polygons/circles, {codes} geocodes)",
        f"  resolution: {e.cover.resolution}",
        f"  cells: {len(e.cover.cells):,} compact, {e.full_cells:,} at the resolution",
        f"  area: {e.area_km2:,.1f} km² covered",
        f"  time: {e.seconds:.3f} s",
    ]
    for item in e.unresolved():
        lines.append(f"  unresolved: {item['name']} {item['value']}: {item['reason']}")
    return "\n".join(lines)


def geojson(expansions: list[Expansion]) -> dict[str, Any]:
    """The covers as a FeatureCollection of cell hexagons ([lon, lat], for geojson.io)."""
    features = []
    for e in expansions:
        for cell in sorted(e.cover.cells):
            ring = [[lon, lat] for lat, lon in h3i.cell_to_boundary(cell)]
            ring.append(ring[0])
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": {
                        "alert_id": e.alert.identifier,
                        "cell": h3i.int_to_str(cell),
                        "resolution": int(h3i.get_resolution(cell)),
                    },
                }
            )
    return {"type": "FeatureCollection", "features": features}

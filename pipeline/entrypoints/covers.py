"""``alertfeed covers warm [--states] [SAME...]``: compute covers ahead of alerts.

A state-wide alert names its state by a SAME code (``048000`` is Texas) and its cover is
always the same, but covering a large state at resolution 10 takes seconds. Warming puts
those covers in the worker's cover cache (``match.cover_cache_dir``) before any alert
needs them, so the fan-out of a state-wide alert starts at once. The container image
warms every state at build time.
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.adapters.census import CensusGazetteer
from pipeline.domain.geo.covercache import cached_cover
from pipeline.domain.geo.geocodes import resolve_geocodes_with_reasons
from pipeline.domain.models import Geocode
from pipeline.entrypoints.wiring import cover_limits, make_cover_cache
from pipeline.errors import AlertfeedError, ConfigurationError
from pipeline.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    warm = sub.add_parser("warm", help="compute and cache the covers of SAME areas")
    warm.add_argument("codes", nargs="*", help="SAME codes, e.g. 048000 (Texas), 048201")
    warm.add_argument("--states", action="store_true", help="every state and territory")


def run_covers(args: argparse.Namespace, settings: Settings) -> int:
    cache = make_cover_cache(settings)
    if cache is None:
        raise ConfigurationError("the cover cache is off (match.cover_cache_mb=0)")
    gazetteer = CensusGazetteer()
    codes = list(args.codes)
    if args.states:
        codes += [f"0{fips}000" for fips in sorted(gazetteer.state_codes())]
    if not codes:
        raise ConfigurationError("name SAME codes to warm, or --states")
    resolution, limits = settings.match.resolution, cover_limits(settings)
    failed = 0
    print(f"warming {len(codes)} covers at resolution {resolution} in {cache.directory}")
    for code in dict.fromkeys(codes):
        started = time.perf_counter()
        area = resolve_geocodes_with_reasons([Geocode("SAME", code)], gazetteer)
        if not area.polygons:
            reasons = "; ".join(item.reason for item in area.unresolved)
            print(f"  {code}: skipped, {reasons or 'no boundary'}", file=sys.stderr)
            failed += 1
            continue
        try:
            cells = cached_cover(cache, area.polygons, (), resolution, limits)
        except AlertfeedError as exc:
            print(f"  {code}: failed, {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"  {code}: {len(cells):,} cells, {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0

"""``alertfeed status``: per-alert reach for on-call engineers and partners.

Reads the shared reach store in Redis (:mod:`pipeline.adapters.redis.reach`), so it answers for
all workers together and works while no worker runs. The same figures are served as JSON
by every worker at ``GET /alerts/reach``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson

from pipeline.adapters.redis.reach import RedisReachStore
from pipeline.domain.alerts.timefmt import ms_to_iso
from pipeline.domain.reach import AlertReach
from pipeline.entrypoints.wiring import make_redis
from pipeline.settings import Settings

COLUMNS = ("ALERT ID", "STATUS", "STATE", "ISSUED AT (UTC)", "CARDS", "LAST 5 MIN", "LAST 60 MIN")


def reach_table(rows: Sequence[AlertReach]) -> str:
    """A fixed-width text table, one line per alert; a note when there is none."""
    if not rows:
        return "no alerts with reach data (none issued, or all expired)"
    cells = [
        (
            r.alert_id,
            r.status or "-",
            r.state or "-",
            ms_to_iso(r.issued_ms) if r.issued_ms is not None else "-",
            str(r.total),
            str(r.last_5m),
            str(r.last_60m),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    numeric = {4, 5, 6}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(COLUMNS), *(line(c) for c in cells)])


async def read_reach(settings: Settings, now_ms: int) -> list[AlertReach]:
    """The reach snapshot from Redis. Raises IndexUnavailable when Redis cannot be read."""
    client = make_redis(settings)
    try:
        return await RedisReachStore(client, prefix=settings.redis.key_prefix).snapshot(now_ms)
    finally:
        await client.aclose()


def run_status(settings: Settings, *, as_json: bool = False) -> int:
    """Print the reach of every remembered alert; 0 on success (IndexUnavailable propagates
    to the CLI, which prints it and exits 1)."""
    rows = asyncio.run(read_reach(settings, time.time_ns() // 1_000_000))
    if as_json:
        print(orjson.dumps([r.to_json() for r in rows], option=orjson.OPT_INDENT_2).decode())
    else:
        print(reach_table(rows))
    return 0

"""A synthetic scenario written as an event log.

The scenario itself is :mod:`pipeline.replay.scenario`; :func:`simulate_to` streams it to a
``.jsonl``/``.jsonl.gz``/``.jsonl.zst`` file (alerts as CAP XML strings keyed by the alert
identifier as first issued, locations as objects keyed by user id). Same arguments, same
bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.replay.eventlog import EventLogWriter, LoggedRecord, json_record
from pipeline.replay.progress import progress_bar
from pipeline.replay.scenario import DEFAULT_SENDER, ScenarioSpec, scenario_events


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    records: int
    locations: int
    alert_messages: int
    first_ts: int | None
    last_ts: int | None


def simulate_to(  # noqa: PLR0917 - the signature the demo calls positionally
    path: str | os.PathLike[str],
    users: int,
    duration_s: float,
    alerts: int,
    seed: int,
    start_ms: int,
    sender: str = DEFAULT_SENDER,
    *,
    report_every_s: float = 300.0,
    progress: bool = False,
) -> SimulationSummary:
    """Write the scenario of these parameters to ``path`` (compression by suffix).

    Deterministic: the same arguments give a byte-identical file. Streams, so any size
    fits in memory. Raises ValueError for impossible parameters.
    """
    spec = ScenarioSpec(
        users=users,
        duration_s=duration_s,
        alerts=alerts,
        seed=seed,
        start_ms=start_ms,
        sender=sender,
        report_every_s=report_every_s,
    )
    locations = alert_messages = 0
    first_ts: int | None = None
    last_ts: int | None = None
    bar = None
    if progress:
        bar = progress_bar("simulate", int(users * spec.duration_s / spec.report_every_s))
    with EventLogWriter(path) as writer:
        for topic, ts, key, value in scenario_events(spec):
            if topic == "locations":
                writer.write_line(json_record(topic, ts, key, value))
                locations += 1
            else:
                writer.write(LoggedRecord(topic, ts, key.encode(), value.encode()))
                alert_messages += 1
            if first_ts is None:
                first_ts = ts
            last_ts = ts
            if bar is not None and writer.count % 10_000 == 0:
                bar.update(10_000)
        if bar is not None:
            bar.update(writer.count % 10_000)
            bar.close()
        return SimulationSummary(writer.count, locations, alert_messages, first_ts, last_ts)

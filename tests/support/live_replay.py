"""Putting an event log in front of a real worker in the order the offline replay applies it.

The offline replay (:func:`pipeline.replay.offline.replay_log`) runs a log in event-time
order: every location before an alert message is matched before the alert is applied, and
the alert (with its fan-out) before any location after it. :func:`replay_to_worker` gives a
real ``alertfeed worker`` the same order: it publishes the locations between two alert
messages, waits until the worker has matched all of them (by its /metrics), publishes the
alert message and waits until the worker has applied it and finished its fan-out over
every partition of the locations topic (the worker owns them all). Within a
segment the worker batches and interleaves partitions as it likes; that changes no
(user, alert) pair, because the set of active alerts is fixed within a segment.

A wait ends when the worker has caught up, or fails when the worker has made no progress
for ``stall_timeout_s`` (a stuck worker, not a slow one: the machine may be busy), with the
tail of the worker's log in the message. Polls back off to half a second, one /metrics
scrape each, so that watching a busy worker costs it little.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.adapters.kafka.tools import DeliveryProducer
from pipeline.replay.eventlog import read_log
from pipeline.replay.order import event_time_rows
from pipeline.settings import Settings
from tests.support.worker import WorkerProcess

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$", re.M)

Metric = Callable[..., float]
"""``value(name, **labels)``: the sum of the samples of ``name`` whose labels include
``labels``, in one scrape."""


@dataclass(slots=True)
class LiveReplaySummary:
    """What was published, and where the time went (seconds, wall clock)."""

    locations: int = 0
    alerts: int = 0
    publish_s: float = 0.0  # producing, up to the broker's acks (the worker consumes meanwhile)
    catch_up_s: float = 0.0  # after the acks, waiting for the worker to match the locations
    alerts_s: float = 0.0  # from publishing an alert message to the end of its fan-out
    total_s: float = 0.0


def scrape(worker: WorkerProcess) -> Metric:
    """One read of the worker's /metrics."""
    samples = [
        (name, set(labels.split(",")) if labels else set(), float(value))
        for name, labels, value in _SAMPLE.findall(worker.metrics_text())
    ]

    def value(name: str, **labels: str) -> float:
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        return sum(v for n, found, v in samples if n == name and wanted <= found)

    return value


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in the worker's /metrics whose labels include
    ``labels``."""
    return scrape(worker)(name, **labels)


def wait_for(
    state: Callable[[], tuple[bool, Hashable]],
    what: str,
    *,
    worker: WorkerProcess | None = None,
    stall_timeout_s: float = 60.0,
) -> None:
    """Return once ``state()`` says done. ``state()`` gives ``(done, progress)``; raise
    AssertionError naming ``what`` when ``progress`` has not changed for
    ``stall_timeout_s`` (so a slow but moving worker is waited for)."""
    done, last = state()
    moved_at = time.monotonic()
    pause = 0.05
    while not done:
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
        done, progress = state()
        if progress != last:
            last, moved_at = progress, time.monotonic()
        elif time.monotonic() - moved_at > stall_timeout_s:
            tail = f"\nworker log tail:\n{worker.log_tail()}" if worker else ""
            raise AssertionError(
                f"worker did not finish {what}: no progress for {stall_timeout_s:.0f}s "
                f"(last seen: {last}){tail}"
            )


def replay_to_worker(
    settings: Settings,
    worker: WorkerProcess,
    log: str | Path,
    *,
    stall_timeout_s: float = 60.0,
) -> LiveReplaySummary:
    """Publish the alerts and locations of ``log`` (logical topic names) to ``settings``'
    topics in event-time order, segment by segment as the module docstring says; returns
    once ``worker`` has matched every location. Raises AssertionError if the worker stalls,
    BrokerUnavailable if the broker does not acknowledge a record, ValueError for a record
    of another topic."""
    summary = LiveReplaySummary()
    topics = settings.topics
    producer = DeliveryProducer(settings)
    fanned_out = 0
    partitions = topics.partitions
    started = segment_began = time.monotonic()

    def locations_state() -> tuple[bool, Hashable]:
        value = scrape(worker)
        consumed = value("alertfeed_events_in_total", topic="locations")
        begun = value("alertfeed_batch_events_count", topic="locations")
        finished = value("alertfeed_batch_duration_seconds_count", topic="locations")
        return consumed >= summary.locations and begun == finished, (consumed, finished)

    def alert_state() -> tuple[bool, Hashable]:
        value = scrape(worker)
        applied = value("alertfeed_alert_lifecycle_total")
        # One fan-out per partition of the locations topic (the worker owns them all),
        # done or stopped.
        fanouts = value("alertfeed_fanouts_total")
        return applied >= summary.alerts and fanouts >= fanned_out * partitions, (
            applied,
            fanouts,
        )

    def catch_up() -> None:
        producer.flush()
        acked = time.monotonic()
        summary.publish_s += acked - segment_began
        wait_for(
            locations_state,
            f"matching {summary.locations} locations",
            worker=worker,
            stall_timeout_s=stall_timeout_s,
        )
        summary.catch_up_s += time.monotonic() - acked

    send = producer.send
    for _seq, topic, _ts, key, value, _headers, _partition, _offset in event_time_rows(log):
        if topic == "locations":
            send(topics.locations, value, key)
            summary.locations += 1
            continue
        if topic != "alerts":
            raise ValueError(f"{log}: a record of topic {topic!r}, not alerts or locations")
        catch_up()
        alert_began = time.monotonic()
        send(topics.alerts, value, key)
        producer.flush()
        summary.alerts += 1
        fanned_out += b"<msgType>Cancel</msgType>" not in (value or b"")
        wait_for(
            alert_state,
            f"alert message {summary.alerts} (and its fan-out)",
            worker=worker,
            stall_timeout_s=stall_timeout_s,
        )
        segment_began = time.monotonic()
        summary.alerts_s += segment_began - alert_began
    catch_up()
    summary.total_s = time.monotonic() - started
    return summary


def card_pairs(path: Path) -> set[tuple[str, str]]:
    """The (user, alert) pairs of the interstitials in an event log."""
    return {
        (card["user_id"], card["alert_id"])
        for record in read_log(path)
        if record.topic == "interstitials" and record.value is not None
        for card in [orjson.loads(record.value)]
    }

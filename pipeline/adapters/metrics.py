"""Prometheus metrics of a worker. Base units, ``_total`` counters, ``_seconds`` durations.

Labels are low-cardinality only: logical topic names, reason classes, states. Never user
ids, cells, coordinates or alert ids (per-alert reach is served by ``alertfeed status``).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Location -> card: finer below the 100 ms objective, so that its quantiles near the
# objective are read off within 10-25 ms, not interpolated across 50-100 ms.
CARD_LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15, 0.2,
    0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip


class Metrics:
    """All metrics of one worker, in a registry of its own, and its readiness.

    Readiness is held as a plain flag, :attr:`is_ready` (what ``/ready`` answers), set with
    :meth:`set_ready`, which mirrors it into the ``alertfeed_worker_ready`` gauge: gauges
    are written for Prometheus, never read back."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Longer than a function should be, on purpose: one declaration per metric, the
        # whole catalogue of what a worker exposes in one place (tests/deploy reads it).
        self.registry = registry or CollectorRegistry()
        self.is_ready = False
        r = self.registry
        # process_start_time_seconds and friends: a worker that keeps restarting (crash-only,
        # see pipeline.adapters.faust.app) shows as changes of its start time.
        ProcessCollector(registry=r)
        self.events_in = Counter(
            "alertfeed_events_in_total", "Events consumed, by logical topic.", ["topic"], registry=r
        )
        self.events_out = Counter(
            "alertfeed_events_out_total",
            "Events produced, by logical topic.",
            ["topic"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "alertfeed_events_dead_lettered_total",
            "Input events sent to the dead-letter topic, by source topic and reason class.",
            ["topic", "reason"],
            registry=r,
        )
        self.locations_ignored = Counter(
            "alertfeed_locations_ignored_total",
            "Valid location events not matched, by reason (stale: older than the window).",
            ["reason"],
            registry=r,
        )
        self.dedup_hits = Counter(
            "alertfeed_dedup_hits_total",
            "Cards not emitted because the (user, alert) pair already got one.",
            registry=r,
        )
        self.infra_retries = Counter(
            "alertfeed_infrastructure_retries_total",
            "Batches retried after an infrastructure failure, by dependency.",
            ["dependency"],
            registry=r,
        )
        self.redis_errors = Counter(
            "alertfeed_redis_errors_total", "Failed Redis round trips.", registry=r
        )
        self.redis_latency = Histogram(
            "alertfeed_redis_roundtrip_seconds",
            "Duration of the index lookups of one location batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "alertfeed_batch_duration_seconds",
            "Time to process one consumed batch, by logical topic.",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "alertfeed_batch_events",
            "Events per consumed batch, by logical topic.",
            ["topic"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.e2e_latency = Histogram(
            "alertfeed_location_to_card_seconds",
            "From a location event's timestamp to its card being acknowledged by the broker.",
            buckets=CARD_LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts_preparing = Gauge(
            "alertfeed_alerts_preparing",
            "Alert messages being parsed and covered right now (in the preparation process).",
            registry=r,
        )
        self.expansion_duration = Histogram(
            "alertfeed_alert_expansion_seconds",
            "Time to parse and cover one alert message.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.lifecycle = Counter(
            "alertfeed_alert_lifecycle_total",
            "Alert state changes, by state.",
            ["state"],
            registry=r,
        )
        self.unresolved_geocodes = Counter(
            "alertfeed_unresolved_geocodes_total",
            "Geocodes that could not be resolved to a boundary, by scheme.",
            ["scheme"],
            registry=r,
        )
        self.active_alerts = Gauge(
            "alertfeed_active_alerts",
            "Alerts installed in the index, by status.",
            ["status"],
            registry=r,
        )
        self.cover_cells = Gauge(
            "alertfeed_cover_cells",
            "Compact cover cells of the alerts installed by this worker.",
            registry=r,
        )
        self.first_card = Histogram(
            "alertfeed_alert_first_card_seconds",
            "From an alert's sent time to its first card acknowledged by the broker, once per "
            "alert across all workers.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
            registry=r,
        )
        self.fanout_duration = Histogram(
            "alertfeed_fanout_duration_seconds",
            "Time to fan one alert out to the users of one partition already inside its area.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.fanouts = Counter(
            "alertfeed_fanouts_total",
            "Fan-outs of an alert over one partition, by outcome: done (every present user "
            "carded), stopped (the alert was cancelled or replaced, or the partition went).",
            ["outcome"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "alertfeed_consumer_lag_messages",
            "Messages behind the end of the log on this worker's partitions, by logical topic.",
            ["topic"],
            registry=r,
        )
        self.index_rebuilds = Counter(
            "alertfeed_index_rebuilds_total",
            "Rebuilds of the cell index from the compacted alerts topic.",
            registry=r,
        )
        self.ready = Gauge(
            "alertfeed_worker_ready", "1 once the worker has its partitions and serves.", registry=r
        )

    def set_ready(self, ready: bool) -> None:
        """Record whether the worker has its partitions and serves."""
        self.is_ready = ready
        self.ready.set(1 if ready else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

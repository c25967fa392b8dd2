"""``alertfeed worker``: the Faust worker process."""

from __future__ import annotations

import logging

import faust

from pipeline.adapters.faust_app import create_app
from pipeline.adapters.kafka_tools import ensure_topics
from pipeline.adapters.metrics import Metrics
from pipeline.adapters.runtime import Sink, WorkerRuntime, now_ms
from pipeline.domain.ingest import AlertIngest
from pipeline.domain.matching import Matcher
from pipeline.entrypoints.wiring import make_coverer, make_index, make_policy, make_redis
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; Faust then finishes the batch in flight and commits."""
    created = ensure_topics(settings)
    log.info("topics ready created=%d", len(created))
    index, dedup = make_index(settings, make_redis(settings))
    policy = make_policy(settings)
    if not settings.policy.allowed_senders:
        log.warning("no allowed senders configured: every alert will be rejected")
    matcher = Matcher(
        index,
        dedup,
        policy,
        resolution=settings.match.resolution,
        max_future_skew_ms=int(settings.match.max_future_skew_s * 1000),
        clock_ms=now_ms,
    )
    ingest = AlertIngest(index, policy, make_coverer(settings), now_ms)
    metrics = Metrics()

    def runtime(sink: Sink) -> WorkerRuntime:
        return WorkerRuntime(matcher, ingest, metrics, sink)

    app, _ = create_app(settings, runtime)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()

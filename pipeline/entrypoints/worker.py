"""``alertfeed worker``: the Faust worker process."""

from __future__ import annotations

import logging
from functools import partial

import faust

from pipeline.adapters.faust_app import create_app
from pipeline.adapters.kafka_tools import ensure_topics, read_alert_log
from pipeline.adapters.metrics import Metrics
from pipeline.adapters.reach import ReachTracker, RedisReachStore
from pipeline.adapters.redis_presence import RedisPresenceStore
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
    redis = make_redis(settings)
    index, dedup = make_index(settings, redis)
    policy = make_policy(settings)
    if not settings.policy.allowed_senders:
        log.warning("no allowed senders configured: every alert will be rejected")
    freshness_ms = int(settings.match.freshness_s * 1000)
    presence = RedisPresenceStore(redis, prefix=settings.redis.key_prefix, window_ms=freshness_ms)
    matcher = Matcher(
        index,
        dedup,
        policy,
        presence=presence,
        resolution=settings.match.resolution,
        max_future_skew_ms=int(settings.match.max_future_skew_s * 1000),
        freshness_ms=freshness_ms,
        clock_ms=now_ms,
    )
    ingest = AlertIngest(index, policy, make_coverer(settings), now_ms)
    metrics = Metrics()
    reach = ReachTracker(RedisReachStore(redis, prefix=settings.redis.key_prefix), metrics)

    def runtime(sink: Sink) -> WorkerRuntime:
        return WorkerRuntime(
            matcher,
            ingest,
            metrics,
            sink,
            reach=reach,
            alert_log=partial(read_alert_log, settings),
        )

    app, _ = create_app(settings, runtime)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()

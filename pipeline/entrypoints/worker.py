"""``alertfeed worker``: the Faust worker process."""

from __future__ import annotations

import gc
import logging
from functools import partial

import faust
import mode.loop

from pipeline.adapters.faust.app import create_app
from pipeline.adapters.kafka.sink import ConfluentSink
from pipeline.adapters.kafka.tools import ensure_topics, read_alert_log
from pipeline.adapters.metrics import Metrics
from pipeline.adapters.preparation import PreparationProcess
from pipeline.adapters.redis.reach import RedisReachStore
from pipeline.entrypoints.wiring import (
    make_preparer,
    make_redis,
    make_redis_stores,
    make_runtime,
    make_services,
)
from pipeline.service.reach import ReachTracker
from pipeline.service.runtime import now_ms
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT. Faust then cancels the alerts agent and commits the offsets
    it acknowledged, and the location join leaves its group once its batches in hand are
    done and committed: a batch cut short is not committed, so it is consumed again (see
    pipeline.adapters.faust.app.acknowledge and pipeline.adapters.kafka.batches)."""
    # Before any event loop exists, so that Faust's loop and its consumer thread's are both
    # uvloop (faust-streaming[uvloop]): Faust spends several tasks and loop turns on every
    # message it consumes, which cost less on uvloop (tests/bench/bench_live.py).
    mode.loop.use("uvloop")
    created = ensure_topics(settings)
    log.info("topics ready created=%d", len(created))
    redis = make_redis(settings)
    index, dedup, presence = make_redis_stores(settings, redis)
    if not settings.policy.allowed_senders:
        log.warning("no allowed senders configured: every alert will be rejected")
    services = make_services(settings, index, dedup, presence, now_ms)
    metrics = Metrics()
    reach = ReachTracker(RedisReachStore(redis, prefix=settings.redis.key_prefix), metrics)
    # Parse and cover alerts in a child process under a CPU budget, off the event loop and
    # its interpreter: a hostile alert costs that process, never the location join.
    preparation = PreparationProcess(
        make_preparer,
        settings,
        cpu_budget_s=settings.match.alert_cpu_budget_s,
        wall_budget_s=settings.match.alert_wall_budget_s,
    )
    preparation.start()
    sink = ConfluentSink(settings)
    runtime = make_runtime(
        settings,
        services,
        metrics,
        sink,
        reach=reach,
        alert_log=partial(read_alert_log, settings),
        prepare=preparation.prepare,
        fan_out_inline=False,
    )
    app = create_app(settings, runtime)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    # Everything allocated so far (modules, Faust's app, the clients) lives as long as the
    # process: out of the collector's sight, its full collections no longer walk it. They
    # cost a fifth of the worker's CPU per location before (tests/bench/bench_live.py).
    gc.freeze()
    try:
        worker.execute_from_commandline()
    finally:
        sink.close()
        preparation.close()

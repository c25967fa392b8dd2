"""Benchmark: the live worker's location throughput, through Faust, on the real broker.

N location events (default 200k: 50k users reporting four times, about one in six inside
an AMBER alert's polygon) are published to a private locations topic, with the alert on
the alerts topic before them. Then a real ``alertfeed worker`` process starts (the one the
tests run, configured through the environment) and consumes the backlog. The figure is
locations per second from its first consumed event to its last batch finished (the
batch's cards acknowledged by Kafka and recorded), read from its /metrics, so start-up and
the consumer group join are left out.

Baselines, same run, on the same N messages:

* the same Faust app (``create_app``: same topics, agents, settings, event loop) with a
  handler that does nothing: how fast Faust itself delivers batches on this machine, the
  ceiling for the worker;
* a plain confluent-kafka (librdkafka) consumer reading them: the cost of Kafka alone;
* a plain aiokafka consumer (Faust's client) reading them with ``getmany``.

Also printed: the mean batch size, the worker's CPU time per location (all its threads;
steadier than the rate on a shared machine), the share of the time spent in the
handler (``alertfeed_batch_duration_seconds_sum``) and the Redis commands per location
(``INFO commandstats`` before the worker starts and after it drained the backlog; the
index lookups against the plain Redis index are compared in ``bench_index``).

    python -m tests.bench.bench_live BOOTSTRAP REDIS_URL [N] [RUNS]
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import faust
import mode.loop
import orjson
import redis
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer

from pipeline.adapters.faust.app import create_app
from pipeline.adapters.kafka.tools import DeliveryProducer, ensure_topics
from pipeline.adapters.metrics import Metrics
from pipeline.domain.records import RawEvent
from pipeline.settings import (
    KafkaSettings,
    MetricsSettings,
    PolicySettings,
    RedisSettings,
    Settings,
    TopicSettings,
    child_environment,
    load_settings,
)
from tests.bench.common import Report, print_report
from tests.support.factories import make_alert_json, now_ms
from tests.support.live_replay import scrape
from tests.support.services import free_port
from tests.support.worker import WorkerProcess

SENDER = "amber@bench.alertfeed.example"
# Around central Austin, TX, as (lat, lon); users are spread over a box five times its size.
AUSTIN = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]
USERS = 50_000
ROOT = Path(__file__).resolve().parents[2]


def settings_for(bootstrap: str, redis_url: str, data_dir: Path) -> Settings:
    uid = uuid.uuid4().hex[:8]
    return Settings(
        app_id=f"bench-live-{uid}",
        kafka=KafkaSettings(url=f"kafka://{bootstrap}"),
        redis=RedisSettings(url=redis_url, key_prefix=f"bl{uid}"),
        topics=TopicSettings(
            alerts=f"bl{uid}.alerts",
            locations=f"bl{uid}.locations",
            interstitials=f"bl{uid}.interstitials",
            lifecycle=f"bl{uid}.lifecycle",
            dlq=f"bl{uid}.dlq",
            partitions=6,
        ),
        policy=PolicySettings(allowed_senders=[SENDER]),
        metrics=MetricsSettings(host="127.0.0.1", port=free_port()),
        data_dir=str(data_dir / f"worker-{uid}"),
        log_level="WARNING",
    )


def publish_backlog(settings: Settings, n: int) -> None:
    """The alert, then ``n`` locations of ``USERS`` users, all acknowledged by the broker."""
    producer = DeliveryProducer(settings)
    alert = make_alert_json(polygons=[AUSTIN], sender=SENDER)
    producer.send(settings.topics.alerts, orjson.dumps(alert), str(alert["id"]).encode())
    rng = random.Random(2026)
    ts = now_ms()
    for i in range(n):
        user = f"user-{i % USERS:06d}"
        event = {
            "user_id": user,
            "lat": rng.uniform(30.15, 30.40),
            "lon": rng.uniform(-97.90, -97.60),
            "ts": ts + i // USERS,
            "accuracy_m": 12.5,
        }
        producer.send(settings.topics.locations, orjson.dumps(event), user.encode())
    producer.flush()


class IdleRuntime:
    """The part of WorkerRuntime the Faust app calls, doing nothing but count: what is
    left of a worker when its handler costs nothing."""

    reach = None

    def __init__(self) -> None:
        self.metrics = Metrics()

    async def on_locations(self, batch: Sequence[RawEvent]) -> None:
        m = self.metrics
        m.events_in.labels("locations").inc(len(batch))
        m.batch_size.labels("locations").observe(len(batch))
        with m.batch_duration.labels("locations").time():
            pass

    async def on_alerts(self, batch: Sequence[RawEvent]) -> None:
        self.metrics.events_in.labels("alerts").inc(len(batch))

    async def on_tick(self) -> None:
        pass

    async def refresh_gauges(self) -> None:
        pass


def run_idle_worker() -> None:
    """The worker's Faust app and event loop around :class:`IdleRuntime` (settings from
    the environment, as ``alertfeed worker``); see pipeline.entrypoints.worker."""
    settings = load_settings()
    mode.loop.use("uvloop")
    app = create_app(settings, IdleRuntime())  # type: ignore[arg-type]
    faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True).execute_from_commandline()


class IdleWorkerProcess(WorkerProcess):
    def start(self, timeout_s: float = 90.0) -> IdleWorkerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.bench_live", "--idle-worker"],
            env=child_environment(self.settings),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(timeout_s)
        return self


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_commands(url: str) -> int:
    """Commands the Redis server at ``url`` has run, INFO aside."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def worker_rate(
    settings: Settings, n: int, log_path: Path, *, idle: bool = False
) -> dict[str, float]:
    """Run a worker (``idle``: the Faust app alone) over the backlog, under its own
    consumer group; its locations/s and where its time went."""
    group = f"{settings.app_id}-{'idle' if idle else 'worker'}"
    settings = settings.model_copy(update={"app_id": group})
    commands_before = redis_commands(settings.redis.url)
    worker = (IdleWorkerProcess if idle else WorkerProcess)(settings, log_path).start()
    assert worker.proc is not None
    pid = worker.proc.pid
    try:
        first: tuple[float, float, float] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            value = scrape(worker)
            seen = time.monotonic()
            consumed = value("alertfeed_events_in_total", topic="locations")
            if first is None and consumed > 0:
                first = (seen, consumed, cpu_seconds(pid))
            begun = value("alertfeed_batch_events_count", topic="locations")
            finished = value("alertfeed_batch_duration_seconds_count", topic="locations")
            if consumed >= n and begun == finished:
                cpu = cpu_seconds(pid)
                commands = redis_commands(settings.redis.url) - commands_before
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"worker did not consume {n} locations:\n{worker.log_tail()}")
        assert first is not None
        elapsed = seen - first[0]
        in_handler = value("alertfeed_batch_duration_seconds_sum", topic="locations")
        return {
            "rate": (n - first[1]) / elapsed,
            "cpu_us": (cpu - first[2]) / (n - first[1]) * 1e6,
            "batch": value("alertfeed_batch_events_sum", topic="locations") / begun,
            "handler_share": in_handler / elapsed if elapsed else float("nan"),
            "cards": value("alertfeed_events_out_total", topic="interstitials"),
            "redis_per_location": commands / n,
        }
    finally:
        worker.stop()


def confluent_rate(settings: Settings, n: int) -> float:
    """Messages/s of a plain librdkafka consumer reading the ``n`` locations."""
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"bench-baseline-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topics.locations])
    read = 0
    started: float | None = None
    try:
        while read < n:
            batch = consumer.consume(1000, timeout=1.0)
            if batch and started is None:
                started = time.perf_counter()
            read += sum(1 for m in batch if not m.error())
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        consumer.close()


async def _aiokafka_rate(settings: Settings, n: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.topics.locations,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=f"bench-baseline-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    read = 0
    started: float | None = None
    try:
        while read < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batches and started is None:
                started = time.perf_counter()
            read += sum(len(records) for records in batches.values())
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def run(
    report: Report, bootstrap: str, redis_url: str, locations: int = 200_000, runs: int = 1
) -> None:
    with tempfile.TemporaryDirectory(prefix="alertfeed-bench-live-") as tmp:
        for attempt in range(1, runs + 1):
            settings = settings_for(bootstrap, redis_url, Path(tmp))
            ensure_topics(settings)
            publish_backlog(settings, locations)
            librdkafka = confluent_rate(settings, locations)
            aiokafka = asyncio.run(_aiokafka_rate(settings, locations))
            idle = worker_rate(settings, locations, Path(tmp) / f"idle-{attempt}.log", idle=True)
            live = worker_rate(settings, locations, Path(tmp) / f"worker-{attempt}.log")
            label = (
                f"live worker (Faust), {locations:,} pre-published locations "
                f"(mean batch {live['batch']:.0f}, {live['cpu_us']:.0f} µs of worker CPU per "
                f"location, {live['handler_share']:.0%} of the time in the handler, "
                f"{live['cards']:,.0f} cards, {live['redis_per_location']:.2f} Redis commands "
                f"per location)"
            )
            ceiling = (
                f"the same Faust app with a handler that does nothing (mean batch "
                f"{idle['batch']:.0f}, {idle['cpu_us']:.0f} µs of CPU per location)"
            )
            report(label, live["rate"], "locations/s", ceiling, idle["rate"])
            report(label, live["rate"], "locations/s", "plain confluent-kafka consumer", librdkafka)
            report(label, live["rate"], "locations/s", "plain aiokafka getmany", aiokafka)


if __name__ == "__main__":
    if sys.argv[1:] == ["--idle-worker"]:
        run_idle_worker()
        sys.exit(0)
    run(
        print_report,
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]) if len(sys.argv) > 3 else 200_000,
        int(sys.argv[4]) if len(sys.argv) > 4 else 1,
    )

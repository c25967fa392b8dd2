"""Benchmark: the live worker on a nationwide backlog, beside a naive join, on the real broker.

The input (tests/bench/live_data.py): five active alerts by an allowed sender on the
alerts topic (Texas state-wide, SAME 048000; Travis County TX, 048453; Los Angeles County
CA, 006037; and polygons 5 km across over downtown Chicago and downtown Atlanta), then ONE
pre-published backlog of 1,000,000 locations: 200,000 users over the contiguous US
(population-weighted around 53 metro centres with a few km of scatter, 10 % uniformly
over the lower-48 box), each reporting five times, keyed by user id, fresh. A first
worker installs the alerts (covers, index, lifecycle events) before the locations are
published; the measured workers then find them installed, as in a running deployment
(their Faust group's offsets on the alerts topic are committed at its end, so they do not
prepare the alerts again, and they match against their replica of the shared index).

Printed, each figure beside a same-run baseline, as a ratio:

1. the worker's drain rate: one ``alertfeed worker`` process (tests.support.worker) over
   the backlog, locations per second from its first consumed location to its last batch
   finished (cards acknowledged by Kafka and recorded; read from its /metrics, so its
   start-up and group join are left out), beside
2. the naive join (tests/bench/live_baselines.py) in a process of its own: a plain
   confluent-kafka consumer, orjson, ``h3.latlng_to_cell``, the alerts' compact covers (as
   the worker installed them in Redis) in an in-process dict, a card produced per new
   (user, alert) pair: the ceiling; and beside a plain consumer that only reads;
3. the worker's CPU time per location (all its threads, from /proc) beside the naive
   join's;
4. the Redis commands per location (``INFO commandstats`` before the worker started and
   after it drained the backlog: the server's total, so other clients of that Redis count
   too; their rate is sampled for 2 s before and after, and their estimated share printed)
   beside the target of 1.0;
5. two workers on the same backlog (a fresh app id, hence fresh consumer groups; the same
   Redis prefix, hence the same index; the users' presence and cards dropped first, so they
   redo the same work): the rate from the first location either consumed until both
   drained, beside one worker;
6. the location-to-card latency at half the measured one-worker rate, and at a quarter
   of it: each time a fresh worker on a locations topic of its own, fed for 20 s by an
   open-loop producer (on schedule, whatever the worker does) in this process with fresh
   locations, ``ts`` stamped when each is handed to the producer. Shaped like the
   backlog: a fifth of them the first report of a new user (the only ones that can make a
   card), the rest repeat reports of users already seen; but 80 % of the users around
   Texas metros, so that most first reports make a card (about 16 % of the locations make
   one, against 4 % in the backlog). Unlike the drain, the broker takes the producer's
   writes meanwhile, and the producer a share of the same cores. p50 and p99 from the
   worker's histogram ``alertfeed_location_to_card_seconds`` (event ``ts`` to card
   acknowledged, observed for the locations that made a card), interpolated linearly
   within its buckets (5, 10, 25, 50, 100, 250, 500 ms, 1 s, ...: coarse, so the bucket
   is printed too), beside the 100 ms target; with the worker's batch times
   (``alertfeed_batch_duration_seconds``, and ``alertfeed_redis_roundtrip_seconds``:
   located and carded, waits for the batch ahead included, before the cards are
   published) and whether it kept up (finished within 1 s of the producer's last ack);
   and, for what Kafka alone adds, the same locations' latency to a plain consumer of the
   topic in a process of its own.
   Counted after a 1 s warm-up at 2,000/s through the same producer (the worker's replica
   of the index loads with its first batch; an idempotent producer holds its first
   records until it has a producer id): the histograms' difference.

The workers run two location batches at a time (one located while the previous one's
cards are acknowledged), so the time in the handler is printed as batches in flight.

Each run has its own topics and Redis prefix, dropped at the end. Only the ratios mean
much on a shared machine.

    python -m tests.bench.bench_live BOOTSTRAP REDIS_URL [USERS] [REPORTS] [LIVE_SECONDS]
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.adapters.kafka.tools import PRODUCER_DEFAULTS, ensure_topics
from pipeline.adapters.redis.client import redis_client
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.settings import (
    KafkaSettings,
    MetricsSettings,
    PolicySettings,
    RedisSettings,
    Settings,
    TopicSettings,
)
from tests.bench.common import Report, print_report
from tests.bench.live_baselines import (
    Consumed,
    Transport,
    child,
    in_child,
    naive_join,
    read_only,
    transport_latency,
)
from tests.bench.live_data import (
    BenchAlert,
    bench_alerts,
    live_producer,
    publish_alerts,
    publish_backlog,
    publish_open_loop,
)
from tests.support.live_replay import Metric, scrape
from tests.support.services import free_port
from tests.support.worker import WorkerProcess

SENDER = "amber@bench.alertfeed.example"
USERS = 200_000
REPORTS = 5
LIVE_S = 20.0
STALL_S = 60.0  # a worker making no progress this long has failed
DRAIN_TIMEOUT_S = 300.0  # the most one drain may take, progress or not
NEAR_END = 0.9  # past this share of the backlog consumed, a drain is scraped often again
# The latency runs: name, share of the users around Texas metros (the rest placed as the
# backlog's), and rate as a fraction of the one-worker drain rate; in each a fifth of the
# locations is a new user's first report, as in the backlog. The first is the target's
# "50% of the measured maximum": the backlog's own mix (about 4% of the locations make a
# card). The other two are a card-heavy mix (80% of the users in the Texas-wide alert,
# about 19% make a card, five times the cards to produce and record), whose maximum is
# lower than the backlog's: at half the backlog's rate it runs nearer its own maximum.
LIVE_RUNS = (("half", 0.0, 0.5), ("cardheavy-half", 0.8, 0.5), ("cardheavy-quarter", 0.8, 0.25))
WARMUP_RATE = 2000.0  # locations/s for 1 s before a latency run, not counted


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


def role(settings: Settings, name: str, *, locations: str | None = None) -> Settings:
    """``settings`` for a worker of its own consumer groups (app id ``<app id>-<name>``),
    metrics port and data dir; same Redis prefix and topics (``locations`` aside)."""
    topics = settings.topics
    if locations is not None:
        topics = topics.model_copy(update={"locations": locations})
    return settings.model_copy(
        update={
            "app_id": f"{settings.app_id}-{name}",
            "metrics": MetricsSettings(host="127.0.0.1", port=free_port()),
            "data_dir": f"{settings.data_dir}-{name}",
            "topics": topics,
        }
    )


def same_group(settings: Settings) -> Settings:
    """Another worker of ``settings``' consumer groups: its own metrics port and data dir."""
    return settings.model_copy(
        update={
            "metrics": MetricsSettings(host="127.0.0.1", port=free_port()),
            "data_dir": f"{settings.data_dir}-2",
        }
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_commands(url: str) -> int:
    """Commands the Redis server at ``url`` has run, INFO aside."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def redis_background(url: str, seconds: float = 2.0) -> float:
    """Commands per second the Redis server at ``url`` runs meanwhile (other clients)."""
    before = redis_commands(url)
    time.sleep(seconds)
    return (redis_commands(url) - before) / seconds


def drop_keys(url: str, pattern: str) -> int:
    """Delete the keys matching ``pattern``; returns how many."""
    dropped = 0
    with redis.Redis.from_url(url) as client:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                dropped += int(client.unlink(*batch))
                batch.clear()
        if batch:
            dropped += int(client.unlink(*batch))
    return dropped


def forget_users(settings: Settings) -> None:
    """Drop what the users left in Redis (presence, cards seen, reach); the index stays."""
    p = settings.redis.key_prefix
    for pattern in (f"{p}:pres:*", f"{p}:seen:*", f"{p}:reach*"):
        drop_keys(settings.redis.url, pattern)


def commit_at_end(settings: Settings, group: str, topic: str) -> None:
    """Commit ``group``'s offsets on every partition of ``topic`` at its end: a worker of
    that group starts after what is already there."""
    consumer = Consumer(
        {**settings.kafka.confluent_config(), "group.id": group, "enable.auto.commit": False}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            TopicPartition(
                topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            )
            for p in parts
        ]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


class GroupProgress:
    """Whether a consumer group has committed every partition of a topic to its end."""

    def __init__(self, settings: Settings, group: str, topic: str) -> None:
        self._consumer = Consumer(
            {**settings.kafka.confluent_config(), "group.id": group, "enable.auto.commit": False}
        )
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._tps = [TopicPartition(topic, p) for p in sorted(parts)]

    def drained(self) -> bool:
        committed = self._consumer.committed(self._tps, timeout=10)
        for tp in committed:
            _, end = self._consumer.get_watermark_offsets(tp, timeout=10)
            if tp.offset < end:
                return False
        return True

    def close(self) -> None:
        self._consumer.close()


# -- installing the alerts -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Installed:
    alerts: list[tuple[BenchAlert, int]]  # each alert and the cells of its compact cover
    covers: dict[int, list[str]]  # compact cover cell -> ids of the alerts covering it


async def _installed(settings: Settings) -> tuple[dict[str, frozenset[int]], int]:
    """The installed alerts' covers by alert id, and how many are still owed an
    announcement (a lifecycle event, a fan-out)."""
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    index = RedisCellIndex(client, prefix=settings.redis.key_prefix, resolution=10)
    try:
        covers: dict[str, frozenset[int]] = {}
        owed = 0
        for alert in await index.active_alerts():
            covers[alert.alert_id] = await index.cover_of(alert.key) or frozenset()
            owed += await index.owed(alert.key) is not None
        return covers, owed
    finally:
        await client.aclose()


async def _mark_built(settings: Settings) -> None:
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    try:
        await RedisCellIndex(client, prefix=settings.redis.key_prefix, resolution=10).mark_built()
    finally:
        await client.aclose()


def install_alerts(settings: Settings, log_dir: Path, timeout_s: float = 240.0) -> Installed:
    """Publish the alerts and run a worker until every one is installed and announced."""
    asyncio.run(_mark_built(settings))  # a fresh deployment: the index built, and empty
    alerts = bench_alerts(SENDER, settings.redis.key_prefix)
    publish_alerts(settings, alerts)
    installer = WorkerProcess(role(settings, "install"), log_dir / "install.log")
    try:
        installer.start()
        deadline = time.monotonic() + timeout_s
        while True:
            covers, owed = asyncio.run(_installed(settings))
            if len(covers) == len(alerts) and not owed:
                break
            if time.monotonic() > deadline or not installer.running():
                raise AssertionError(
                    f"{len(covers)} of {len(alerts)} alerts installed ({owed} owed) within "
                    f"{timeout_s:.0f}s:\n{installer.log_tail()}"
                )
            time.sleep(0.5)
    finally:
        installer.stop()
    by_cell: dict[int, list[str]] = {}
    for alert_id, cells in covers.items():
        for cell in cells:
            by_cell.setdefault(cell, []).append(alert_id)
    missing = [a.name for a in alerts if not covers.get(a.identifier)]
    if missing:
        raise AssertionError(f"alerts installed with an empty cover: {missing}")
    return Installed([(a, len(covers[a.identifier])) for a in alerts], by_cell)


# -- draining the backlog --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of the /metrics of every worker serving (per-worker tuples: those)."""

    when: float
    cpu: float  # CPU seconds of the workers' main processes so far
    consumed: tuple[float, ...]  # locations, per worker
    finished: tuple[float, ...]  # location batches handled, per worker
    begun: tuple[float, ...]  # location batches begun, per worker
    events: float  # locations in the batches begun, all workers
    handler_s: float  # seconds spent handling location batches, all workers
    cards: float
    serving: int

    @property
    def total(self) -> float:
        return sum(self.consumed)


def _sample(workers: Sequence[WorkerProcess]) -> Sample:
    values: list[Metric] = []
    for worker in workers:
        if worker.running():
            with contextlib.suppress(OSError):  # not serving yet (URLError is an OSError)
                values.append(scrape(worker))

    def each(name: str) -> tuple[float, ...]:
        return tuple(v(name, topic="locations") for v in values)

    return Sample(
        when=time.monotonic(),
        cpu=sum(cpu_seconds(w.proc.pid) for w in workers if w.running() and w.proc),
        consumed=each("alertfeed_events_in_total"),
        finished=each("alertfeed_batch_duration_seconds_count"),
        begun=each("alertfeed_batch_events_count"),
        events=sum(each("alertfeed_batch_events_sum")),
        handler_s=sum(each("alertfeed_batch_duration_seconds_sum")),
        cards=sum(v("alertfeed_events_out_total", topic="interstitials") for v in values),
        serving=len(values),
    )


@dataclass(frozen=True, slots=True)
class Drain:
    rate: float  # locations/s, from the first consumed (on any worker) to the last handled
    counted: int  # locations consumed after the first scrape that saw any
    all_rate: float  # the same from the first scrape where every worker had consumed some
    consumed: tuple[float, ...]  # locations consumed, per worker (a rebalance may redeliver)
    cpu_us: float  # CPU of the workers' main processes per location
    batch: float  # mean batch size
    in_flight: float  # location batches being handled at a time, on average, per worker
    cards: float
    redis_per_location: float  # the server's commands over the run (others' included)
    redis_others: float  # other clients' share of that, estimated from before and after


def _watch(workers: Sequence[WorkerProcess], n: int, progress: GroupProgress) -> list[Sample]:
    """Scrape the workers until they handled all ``n`` locations and their group committed
    them; returns the first sample that saw a location consumed, the first where every
    worker had consumed some, and the last that saw any progress."""
    first: Sample | None = None
    everyone: Sample | None = None
    last: Sample | None = None
    began = time.monotonic()
    while True:
        sample = _sample(workers)
        if first is None and sample.total > 0:
            first = sample
        if everyone is None and len(sample.consumed) == len(workers) and all(sample.consumed):
            everyone = sample
        if last is None or (sample.consumed, sample.finished) != (last.consumed, last.finished):
            last = sample
        elif sample.when - last.when > STALL_S:
            raise AssertionError(f"no progress for {STALL_S:.0f}s: {sample}")
        if (
            sample.serving == len(workers)
            and sample.total >= n
            and sample.begun == sample.finished
            and progress.drained()
        ):
            assert first is not None
            return [first, everyone or first, last]
        if sample.when - began > DRAIN_TIMEOUT_S:
            raise AssertionError(f"not drained within {DRAIN_TIMEOUT_S:.0f}s: {sample}")
        # Often at the edges, which time the run; seldom between: a scrape of /metrics
        # costs the worker some 5 ms, which 10 a second would add to what is measured.
        near_edge = everyone is None or sample.total >= NEAR_END * n
        time.sleep(0.1 if near_edge else 0.5)


def drain(
    settings: Sequence[Settings], n: int, log_dir: Path, *, redis_others: bool = False
) -> Drain:
    """Start a worker per ``settings`` (the same app id: one consumer group), all at
    once, and measure them over the ``n`` locations of the backlog. ``redis_others``:
    sample the Redis server's commands from other clients just before and after."""
    workers = [WorkerProcess(s, log_dir / f"{s.app_id}-{i}.log") for i, s in enumerate(settings)]
    url, group = settings[0].redis.url, f"{settings[0].app_id}.locations"
    commit_at_end(settings[0], settings[0].app_id, settings[0].topics.alerts)  # installed
    progress = GroupProgress(settings[0], group, settings[0].topics.locations)
    others = redis_background(url) if redis_others else 0.0
    commands_before, counting_from = redis_commands(url), time.monotonic()
    pool = ThreadPoolExecutor(len(workers), thread_name_prefix="bench-worker-start")
    starting: list[Future[WorkerProcess]] = []
    try:
        starting = [pool.submit(w.start, 120.0) for w in workers]
        first, everyone, last = _watch(workers, n, progress)
        commands = redis_commands(url) - commands_before
        counted_s = time.monotonic() - counting_from
        for future in starting:
            future.result(150)  # raises what a start raised
    except BaseException:
        for w in workers:
            print(f"--- {w.log_path}:\n{w.log_tail()}", file=sys.stderr)
        raise
    finally:
        for w in workers:
            if w.proc is not None:
                w.stop()
        for future in starting:
            future.exception()  # start() ends once its worker is gone
        for w in workers:
            if w.running():
                w.stop()
        pool.shutdown()
        progress.close()
    if redis_others:
        others = (others + redis_background(url)) / 2
    counted = n - int(first.total)
    elapsed = last.when - first.when
    return Drain(
        rate=counted / elapsed,
        counted=counted,
        all_rate=(n - everyone.total) / (last.when - everyone.when),
        consumed=last.consumed,
        cpu_us=(last.cpu - first.cpu) / counted * 1e6,
        batch=last.events / sum(last.begun),
        in_flight=(last.handler_s - first.handler_s) / (elapsed * len(workers)),
        cards=last.cards,
        redis_per_location=commands / n,
        redis_others=min(commands, others * counted_s) / n,
    )


# -- latency ---------------------------------------------------------------------------------
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def histogram(text: str, name: str, **labels: str) -> list[tuple[float, float]]:
    """The cumulative buckets ``(upper bound, count)`` of histogram ``name`` (the series
    whose labels include ``labels``) in a /metrics text."""
    pattern = re.compile(rf"^{name}_bucket\{{([^}}]*)\}} (\S+)$", re.M)
    buckets = []
    for found, count in pattern.findall(text):
        got = dict(_LABEL.findall(found))
        if labels.items() <= got.items():
            buckets.append((float(got["le"]), float(count)))
    return sorted(buckets)


def quantile(buckets: Sequence[tuple[float, float]], q: float) -> tuple[float, float, float]:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly within its
    bucket, with that bucket's bounds: ``(estimate, lower, upper)``."""
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower, lower, bound
            return lower + (bound - lower) * (rank - below) / (count - below), lower, bound
        lower, below = bound, count
    return math.nan, math.nan, math.nan


@dataclass(frozen=True, slots=True)
class Latency:
    rate: float  # achieved publishing rate
    sent: int
    users: int
    cards: int
    p50: tuple[float, float, float]
    p99: tuple[float, float, float]
    batch_p50: float  # handling one location batch, seconds
    batch_p99: float
    match_p50: float  # the matcher's part of it (parse, index, presence, dedup, cards built)
    match_p99: float
    drain_s: float  # after the last location was acknowledged, until the worker was done
    transport: Transport  # the same locations to a plain consumer


def _caught_up(worker: WorkerProcess, sent: int) -> None:
    """Wait until ``worker`` has consumed ``sent`` locations and handled every batch."""
    moved_at = time.monotonic()
    last: tuple[float, float] | None = None
    while True:
        value = scrape(worker)
        consumed = value("alertfeed_events_in_total", topic="locations")
        begun = value("alertfeed_batch_events_count", topic="locations")
        finished = value("alertfeed_batch_duration_seconds_count", topic="locations")
        if consumed >= sent and begun == finished:
            return
        if (consumed, finished) != last:
            last, moved_at = (consumed, finished), time.monotonic()
        elif time.monotonic() - moved_at > STALL_S:
            raise AssertionError(f"latency worker stalled:\n{worker.log_tail()}")
        time.sleep(0.1)


def _latency_histograms(worker: WorkerProcess) -> list[list[tuple[float, float]]]:
    """The worker's latency and batch-time histograms, and its cards (as a 1-bucket one)."""
    text = worker.metrics_text()
    cards = scrape(worker)("alertfeed_events_out_total", topic="interstitials")
    return [
        histogram(text, "alertfeed_location_to_card_seconds"),
        histogram(text, "alertfeed_batch_duration_seconds", topic="locations"),
        histogram(text, "alertfeed_redis_roundtrip_seconds"),
        [(math.inf, cards)],
    ]


def latency(
    settings: Settings,
    rate: float,
    seconds: float,
    log_dir: Path,
    *,
    name: str,
    new_share: float = 0.2,
    texas_share: float = 0.8,
) -> Latency:
    """A fresh worker on a fresh locations topic, fed at ``rate`` for ``seconds`` (the
    shares: see :func:`~tests.bench.live_data.publish_open_loop`)."""
    live = role(settings, name, locations=f"{settings.topics.locations}-{name}")
    ensure_topics(live)
    commit_at_end(live, live.app_id, live.topics.alerts)  # the alerts are installed
    worker = WorkerProcess(live, log_dir / f"{name}.log")
    try:
        worker.start()
        # Warm up (the replica of the index loads with the first batch), then count from here.
        producer = live_producer(live)  # one for both: it has its producer id when timed
        warm = publish_open_loop(
            live, WARMUP_RATE, 1.0, user_prefix=f"{name}-warmup", seed=1, producer=producer
        )
        _caught_up(worker, warm.sent)
        before = _latency_histograms(worker)
        with child(
            transport_latency,
            dict(live.kafka.confluent_config()),
            live.topics.locations,
            skip=warm.sent,
            n=int(rate * seconds),  # what publish_open_loop sends
            timeout_s=seconds + 120,
        ) as kafka_alone:
            if kafka_alone(60) != "ready":
                raise AssertionError("the plain consumer of the live topic did not get ready")
            published = publish_open_loop(
                live,
                rate,
                seconds,
                new_share=new_share,
                texas_share=texas_share,
                user_prefix=name,
                producer=producer,
            )
            acked = time.monotonic()
            _caught_up(worker, warm.sent + published.sent)
            done = time.monotonic()
            after = _latency_histograms(worker)
            transport = kafka_alone(60)
        assert isinstance(transport, Transport)
    finally:
        worker.stop()
    buckets, batches, matching, cards = (
        [(le, count - was) for (le, count), (_, was) in zip(a, b, strict=True)]
        for a, b in zip(after, before, strict=True)
    )
    return Latency(
        rate=published.sent / published.seconds,
        sent=published.sent,
        users=published.users,
        cards=int(cards[0][1]),
        p50=quantile(buckets, 0.50),
        p99=quantile(buckets, 0.99),
        batch_p50=quantile(batches, 0.5)[0],
        batch_p99=quantile(batches, 0.99)[0],
        match_p50=quantile(matching, 0.5)[0],
        match_p99=quantile(matching, 0.99)[0],
        drain_s=done - acked,
        transport=transport,
    )


# -- the run ---------------------------------------------------------------------------------
def _naive_topic(settings: Settings) -> str:
    return f"{settings.topics.interstitials}-naive"


def create_topic(settings: Settings, name: str) -> None:
    admin = AdminClient(dict(settings.kafka.confluent_config()))
    spec = NewTopic(name, settings.topics.partitions, settings.topics.replication_factor)
    for future in admin.create_topics([spec], operation_timeout=30).values():
        future.result(timeout=30)


def drop_run(settings: Settings) -> None:
    """Delete the run's topics and Redis keys."""
    t = settings.topics
    topics = [
        *t.by_logical_name().values(),
        *(f"{t.locations}-{name}" for name, _, _ in LIVE_RUNS),
        _naive_topic(settings),
    ]
    admin = AdminClient(dict(settings.kafka.confluent_config()))
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception as exc:  # one never created: nothing to drop
            print(f"(topic not dropped: {exc})", file=sys.stderr)
    drop_keys(settings.redis.url, f"{settings.redis.key_prefix}:*")


def _ms(bounds: tuple[float, float, float]) -> str:
    _, lower, upper = bounds
    if math.isinf(upper):
        return f"above the last bucket bound {lower * 1000:g} ms"
    return f"interpolated within the {lower * 1000:g}-{upper * 1000:g} ms bucket"


def run(
    report: Report,
    bootstrap: str,
    redis_url: str,
    *,
    users: int = USERS,
    reports: int = REPORTS,
    live_s: float = LIVE_S,
    log: Callable[[str], None] = print,
) -> None:
    with tempfile.TemporaryDirectory(prefix="alertfeed-bench-live-") as tmp:
        logs = Path(tmp)
        settings = settings_for(bootstrap, redis_url, logs)
        try:
            ensure_topics(settings)
            create_topic(settings, _naive_topic(settings))
            started = time.monotonic()
            installed = install_alerts(settings, logs)
            log(
                f"alerts installed in {time.monotonic() - started:.0f}s (a worker's start "
                "included): "
                + "; ".join(f"{a.name}: {cells:,} cells" for a, cells in installed.alerts)
            )
            started = time.monotonic()
            n = publish_backlog(settings, users, reports)
            log(f"{n:,} locations published in {time.monotonic() - started:.1f}s")
            kafka = dict(settings.kafka.confluent_config())
            topic, timeout = settings.topics.locations, 180.0
            plain = in_child(read_only, kafka, topic, n, timeout_s=timeout)
            naive = in_child(
                naive_join,
                kafka,
                topic,
                n,
                timeout_s=timeout,
                covers=installed.covers,
                resolution=settings.match.resolution,
                out_topic=_naive_topic(settings),
                producer_config={**kafka, **PRODUCER_DEFAULTS},
            )
            one = drain([role(settings, "one")], n, logs, redis_others=True)
            forget_users(settings)
            two_workers = role(settings, "two")
            two = drain([two_workers, same_group(two_workers)], n, logs)
            lats = []
            for name, texas, share in LIVE_RUNS:
                forget_users(settings)
                lats.append(
                    latency(settings, share * one.rate, live_s, logs, name=name, texas_share=texas)
                )
        finally:
            drop_run(settings)
    _print(
        report,
        n=n,
        users=users,
        reports=reports,
        plain=plain,
        naive=naive,
        one=one,
        two=two,
        lats=lats,
    )


def _print(
    report: Report,
    *,
    n: int,
    users: int,
    reports: int,
    plain: Consumed,
    naive: Consumed,
    one: Drain,
    two: Drain,
    lats: Sequence[Latency],
) -> None:
    worker = (
        f"one worker draining {n:,} pre-published locations ({users:,} users x {reports}; "
        f"rate over the {one.counted:,} consumed after the first scrape; mean batch "
        f"{one.batch:.0f}, {one.in_flight:.2f} batches in flight on average, "
        f"{one.cards:,.0f} cards)"
    )
    report(
        worker,
        one.rate,
        "locations/s",
        f"naive join in one process (confluent consume + orjson + h3 + covers in a dict + "
        f"a card per new pair; {naive.cards:,} cards)",
        naive.rate,
    )
    report(worker, one.rate, "locations/s", "plain confluent-kafka consumer, read only", plain.rate)
    report(
        "worker CPU per location (main process, all threads)",
        one.cpu_us,
        "µs",
        f"naive join CPU per location (plain read only: {plain.cpu_us:.2f} µs)",
        naive.cpu_us,
    )
    report(
        f"Redis commands per location, one worker (INFO commandstats of the whole server; "
        f"other clients' commands meanwhile, sampled before and after: about "
        f"{one.redis_others:.2f} per location, leaving about "
        f"{one.redis_per_location - one.redis_others:.2f})",
        one.redis_per_location,
        "commands",
        "target",
        1.0,
    )
    split = " + ".join(f"{c:,.0f}" for c in two.consumed)
    # From the first scrape where both had consumed: the second worker's start and the
    # rebalance that brings it in (a second or two, in which the first consumes alone)
    # are the group's join time, not its rate.
    report(
        f"two workers, one fresh group, same backlog and index, once both consumed "
        f"(consumed {split}; {two.rate:,.0f}/s over the whole drain, from the first "
        f"location consumed; {two.cpu_us:.1f} µs CPU per location together; "
        f"{two.cards:,.0f} cards)",
        two.all_rate,
        "locations/s",
        "one worker",
        one.rate,
    )
    for (_, texas, share), lat in zip(LIVE_RUNS, lats, strict=True):
        behind = (
            "kept up"
            if lat.drain_s < 1
            else f"did NOT keep up: done {lat.drain_s:.1f}s after the last location was acked"
        )
        context = (
            f"{lat.rate:,.0f} locations/s open loop, {behind}; users "
            f"{f'{texas:.0%} around Texas metros' if texas else 'as the backlog'}; "
            f"{lat.sent:,} locations of {lat.users:,} new users, {lat.cards:,} cards; batch "
            f"handled p50/p99 {lat.batch_p50 * 1000:.0f}/{lat.batch_p99 * 1000:.0f} ms, "
            f"located and carded {lat.match_p50 * 1000:.0f}/{lat.match_p99 * 1000:.0f} ms; "
            f"Kafka alone, the same locations to a plain consumer: p50/p99 "
            f"{lat.transport.p50_ms:.0f}/{lat.transport.p99_ms:.0f} ms"
        )
        for label, q in (("p50", lat.p50), ("p99", lat.p99)):
            report(
                f"location -> card latency {label} at {share} x the one-worker rate "
                f"({_ms(q)}; {context})",
                q[0] * 1000,
                "ms",
                "target",
                100.0,
            )


if __name__ == "__main__":
    run(
        print_report,
        sys.argv[1],
        sys.argv[2],
        users=int(sys.argv[3]) if len(sys.argv) > 3 else USERS,
        reports=int(sys.argv[4]) if len(sys.argv) > 4 else REPORTS,
        live_s=float(sys.argv[5]) if len(sys.argv) > 5 else LIVE_S,
    )

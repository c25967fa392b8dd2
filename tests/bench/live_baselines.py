"""The same-run baselines of the live bench (tests/bench/bench_live.py), each run in a
process of its own so that it gets a core, as a worker process does.

* :func:`read_only`: a plain confluent-kafka consumer reading the backlog
  (``consume(1000)``), nothing else: the cost of Kafka alone.
* :func:`naive_join`: the join written as plainly as it can be, the ceiling a worker is
  held against: ``consume(1000)``, ``orjson.loads``, ``h3.latlng_to_cell`` at the index
  resolution, then a look-up of that cell and of its parents at each resolution present in
  an in-process dict of the alerts' compact covers, and for each (user, alert) pair not
  seen before (an in-process set) a small card (``orjson.dumps``) produced to an output
  topic by a confluent-kafka producer, flushed (every card acknowledged) at the end. No
  validation, no presence, no Redis, no commits, no at-least-once bookkeeping.

Each returns the messages it read, the wall time from its first message to its end (the
flush included) and the CPU time of the process over the same span (every thread of it,
librdkafka's included), plus the cards produced.

* :func:`transport_latency`: a plain consumer of a live topic, timing each location from
  its event ``ts`` to its arrival: what Kafka alone adds to the location-to-card latency.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import h3.api.basic_int as h3i
import orjson
from confluent_kafka import Consumer, Producer

Config = Mapping[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class Consumed:
    messages: int
    seconds: float  # from the first message read to the end
    cpu_s: float  # process CPU time (all threads) over the same span
    cards: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.messages * 1e6


def _consumer(config: Config, topic: str) -> Consumer:
    consumer = Consumer(
        {
            **config,
            "group.id": f"bench-baseline-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


def read_only(config: Config, topic: str, n: int, timeout_s: float) -> Consumed:
    """Read ``n`` messages of ``topic`` from the start, touching nothing but their count."""
    return _timed(
        config, topic, n, timeout_s, verb="read", step=lambda b: sum(m.error() is None for m in b)
    )


def _timed(
    config: Config,
    topic: str,
    n: int,
    timeout_s: float,
    *,
    verb: str,
    step: Callable[[list[Any]], int],
    finish: Callable[[], None] = lambda: None,
) -> Consumed:
    """Consume ``topic`` from the start until ``step`` (given each batch, returning how many
    of its messages it took) took ``n``, then ``finish()``; the wall and CPU time from the
    first batch on."""
    consumer = _consumer(config, topic)
    read = 0
    started = cpu = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while read < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{verb} {read} of {n} messages within {timeout_s:.0f}s")
            batch = consumer.consume(1000, 1.0)
            if batch and not read:
                started, cpu = time.perf_counter(), time.process_time()
            read += step(batch)
        finish()
        return Consumed(read, time.perf_counter() - started, time.process_time() - cpu)
    finally:
        consumer.close()


def naive_join(
    config: Config,
    topic: str,
    n: int,
    timeout_s: float,
    *,
    covers: Mapping[int, Sequence[str]],
    resolution: int,
    out_topic: str,
    producer_config: Config,
) -> Consumed:
    """Match ``n`` location events of ``topic`` against ``covers`` (compact cover cell ->
    the alert ids covering it), producing one card per new (user, alert) pair to
    ``out_topic``."""
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        {**producer_config, "delivery.report.only.error": True, "on_delivery": on_delivery}
    )
    join = _Join(covers, resolution, producer, out_topic)

    def step(batch: list[Any]) -> int:
        joined = join(batch)
        producer.poll(0)
        return joined

    def flush() -> None:
        remaining = producer.flush(60)
        if remaining or failures:
            raise RuntimeError(f"{remaining} cards undelivered, {len(failures)} failed")

    done = _timed(config, topic, n, timeout_s, verb="joined", step=step, finish=flush)
    return Consumed(done.messages, done.seconds, done.cpu_s, join.cards)


class _Join:
    """The naive join of one batch: returns the messages read, counts the cards."""

    def __init__(
        self, covers: Mapping[int, Sequence[str]], resolution: int, producer: Any, out_topic: str
    ) -> None:
        levels = sorted({h3i.get_resolution(c) for c in covers})
        self.parents = [r for r in levels if r < resolution]
        self.at_resolution = resolution in levels
        self.resolution = resolution
        self.covers = covers
        self.producer = producer
        self.out_topic = out_topic
        self.seen: set[tuple[str, str]] = set()
        self.cards = 0

    def __call__(self, batch: Sequence[Any]) -> int:
        lookup, parents, res = self.covers.get, self.parents, self.resolution
        to_parent, to_cell = h3i.cell_to_parent, h3i.latlng_to_cell
        loads, seen = orjson.loads, self.seen
        read = 0
        for msg in batch:
            value = msg.value()
            if msg.error() is not None or value is None:
                continue
            read += 1
            event = loads(value)
            cell = to_cell(event["lat"], event["lon"], res)
            hits = [a for r in parents for a in lookup(to_parent(cell, r), ())]
            if self.at_resolution:
                hits.extend(lookup(cell, ()))
            user = event["user_id"]
            for alert in hits:
                if (user, alert) not in seen:
                    seen.add((user, alert))
                    self._card(user, alert, event["ts"])
        return read

    def _card(self, user: str, alert: str, ts: int) -> None:
        card = orjson.dumps({"user_id": user, "alert_id": alert, "ts": ts})
        while True:
            try:
                self.producer.produce(self.out_topic, card, user.encode())
                break
            except BufferError:
                self.producer.poll(0.05)
        self.cards += 1


@dataclass(frozen=True, slots=True)
class Transport:
    """Event ``ts`` to a plain consumer's hands, over ``samples`` messages (ms)."""

    samples: int
    p50_ms: float
    p99_ms: float


def transport_latency(
    conn: Connection, config: Config, topic: str, *, skip: int, n: int, timeout_s: float
) -> None:
    """Read the ``skip`` messages already on ``topic``, say ``"ready"`` on ``conn``, then
    take the next ``n`` and send their :class:`Transport` latency: now minus the event's
    ``ts``, at the moment ``consume()`` returned them."""
    consumer = _consumer(config, topic)
    deadline = time.monotonic() + timeout_s
    try:
        seen = 0
        while seen < skip:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {seen} of the {skip} messages already there")
            seen += sum(1 for m in consumer.consume(1000, 0.2) if m.error() is None)
        conn.send("ready")
        delays: list[int] = []
        while len(delays) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed {len(delays)} of {n} messages within {timeout_s:.0f}s")
            batch = consumer.consume(1000, 0.002)  # at once: no batching window of its own
            now = time.time_ns() // 1_000_000
            delays.extend(
                now - orjson.loads(value)["ts"]
                for m in batch
                if m.error() is None and (value := m.value()) is not None
            )
        delays.sort()
        conn.send(Transport(len(delays), delays[len(delays) // 2], delays[len(delays) * 99 // 100]))
    finally:
        consumer.close()


def _run(
    conn: Connection, fn: Callable[..., None], args: tuple[Any, ...], kw: dict[str, Any]
) -> None:
    try:
        fn(conn, *args, **kw)
    except BaseException:
        conn.send(traceback.format_exc())
    finally:
        conn.close()


def _returning(conn: Connection, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
    conn.send(fn(*args, **kw))


@contextmanager
def child(fn: Callable[..., None], *args: Any, **kw: Any) -> Iterator[Callable[[float], Any]]:
    """``fn(conn, *args, **kw)`` in a fresh (spawned) process; yields ``receive(timeout_s)``,
    which returns the next object the child sends on ``conn``, or raises RuntimeError
    (with the child's traceback, if it failed). The child is killed on leaving if it is
    still there."""
    ctx = multiprocessing.get_context("spawn")
    parent, end = ctx.Pipe()
    name = getattr(fn, "__name__", "child")
    proc = ctx.Process(target=_run, args=(end, fn, args, kw), name=name, daemon=True)
    proc.start()
    end.close()

    def receive(timeout_s: float) -> Any:
        if not parent.poll(timeout_s):
            raise RuntimeError(f"{name} sent nothing within {timeout_s:.0f}s")
        got = parent.recv()
        if isinstance(got, str) and got.startswith("Traceback"):
            raise RuntimeError(f"{name} failed:\n{got}")
        return got

    try:
        yield receive
    finally:
        parent.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(10)


def in_child(fn: Callable[..., Consumed], *args: Any, timeout_s: float, **kw: Any) -> Consumed:
    """``fn(*args, timeout_s, **kw)`` in a fresh (spawned) process: its result, or
    RuntimeError with the child's traceback."""
    with child(_returning, fn, *args, timeout_s, **kw) as receive:
        result = receive(timeout_s + 30)
    assert isinstance(result, Consumed)
    return result

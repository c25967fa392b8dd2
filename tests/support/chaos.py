"""The harness of the chaos end-to-end test (tests/e2e/test_chaos.py): faults (SIGKILLed
workers, restarted services) injected into a :class:`~tests.support.fleet.Fleet`, waits on
observable outcomes only, a record of what was published and when, and the duplicates
report.

Times: ``mono`` values are ``time.monotonic()`` of this process, used to order what the
test did; ``wall_ms`` values are epoch ms, compared with the broker timestamps of the cards
(the workers' producers stamp them on the same machine).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer

from pipeline.adapters.kafka.tools import DeliveryProducer
from pipeline.domain.records import RawEvent
from pipeline.settings import Settings
from tests.support.factories import now_ms
from tests.support.fleet import Fleet, GroupProgress
from tests.support.live_replay import metric
from tests.support.schemas import assert_valid
from tests.support.worker import WorkerProcess

# The test's own Kafka clients log through here (captured by pytest), not onto stderr:
# they complain loudly while the broker is down.
KAFKA_LOG = logging.getLogger("chaos.kafka-clients")
LatLon = tuple[float, float]
Pair = tuple[str, str]  # (user id, alert id)


@dataclass
class Sent:
    """One location the test published: when (monotonic) it was handed to the producer,
    and when the broker had acknowledged it."""

    user: str
    lat: float
    lon: float
    sent: float
    acked: float = math.inf


@dataclass
class Fault:
    name: str
    wall_ms: int  # broker timestamps of the cards are compared with this
    mono: float


@dataclass
class ChaosRun:
    """A scenario's state: the workers, the observers, what was published and when."""

    settings: Settings
    stack: Any
    fleet: Fleet
    progress: GroupProgress
    lifecycle: Consumer
    producer: DeliveryProducer
    rng: random.Random
    sent: list[Sent] = field(default_factory=list)
    pending: list[Sent] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    redis_restarts: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    phase_timeout_s: float = 150.0
    # Summed over worker processes, each read just before it is killed or stopped (a
    # worker that exits by itself takes its counts along): consumed more than published
    # means redeliveries; dedup hits, the cards they did not repeat.
    consumed: float = 0.0
    dedup_hits: float = 0.0

    # -- publishing --------------------------------------------------------------------
    def locate(self, user: str, where: LatLon) -> None:
        record = Sent(user, where[0], where[1], time.monotonic())
        value = {"user_id": user, "lat": where[0], "lon": where[1], "ts": now_ms()}
        self.producer.send(self.settings.topics.locations, orjson.dumps(value), user.encode())
        self.pending.append(record)

    def flush(self) -> None:
        self.producer.flush(120)
        acked = time.monotonic()
        for record in self.pending:
            record.acked = acked
        self.sent.extend(self.pending)
        self.pending.clear()

    def publish_alert(self, alert: dict[str, Any], key: str, mark: str) -> None:
        """Publish one alert message. Callers settle first (or have settled, and sent no
        location since), so that each location is known to have met the cover in force
        when it was sent."""
        self.marks[mark] = time.monotonic()
        producer = DeliveryProducer(self.settings, logger=KAFKA_LOG)  # type: ignore[arg-type]
        producer.send(self.settings.topics.alerts, orjson.dumps(alert), key.encode())
        producer.flush(60)

    # -- faults ------------------------------------------------------------------------
    def fault(self, name: str) -> None:
        self.faults.append(Fault(name, now_ms(), time.monotonic()))

    def kill(self, why: str, index: int | None = None) -> None:
        index = self.rng.randrange(len(self.fleet.slots)) if index is None else index
        self.account(self.fleet.slots[index].process)
        self.fault(f"SIGKILL worker {index} ({why})")
        self.fleet.kill(index)

    def account(self, worker: WorkerProcess) -> None:
        """Add a worker's location and dedup counters to the run's (see ``consumed``)."""
        if worker.running():
            self.consumed += max(
                0.0, scraped(worker, "alertfeed_events_in_total", topic="locations")
            )
            self.dedup_hits += max(0.0, scraped(worker, "alertfeed_dedup_hits_total"))

    def account_all(self) -> None:
        for slot in self.fleet.slots:
            self.account(slot.process)

    def kill_busy(self, why: str, wave: Callable[[], None]) -> None:
        """Send ``wave`` and SIGKILL a random worker as soon as it has begun to consume
        it (its alertfeed_events_in_total grew): mid-batch, or between a batch and the
        commit of its offsets (every second)."""
        index = self.rng.randrange(len(self.fleet.slots))
        victim = self.fleet.slots[index].process
        before = scraped(victim, "alertfeed_events_in_total", topic="locations")
        wave()
        self.flush()
        self.fleet.wait(
            f"worker {index} consuming ({why})",
            lambda: (
                not victim.running()
                or scraped(victim, "alertfeed_events_in_total", topic="locations") > before
                or self.progress.drained()
            ),
        )
        self.kill(why, index)

    def kill_announcer(self, state: str, why: str) -> None:
        """SIGKILL the worker that announced a lifecycle event in ``state``, at once: done
        with that message and, most likely, before it committed it (every second), so the
        message is consumed again by another worker. The fan-outs run on a task of their
        own, recorded finished per partition, so this kill may also land in the middle of
        the announcer's fan-out, which the next owners of its partitions complete."""
        self.kill(why, self.announcer(state))

    # -- waiting -----------------------------------------------------------------------
    def settle(self, what: str) -> None:
        """Every worker up and ready, the group drained, and every installed alert's
        fan-out recorded finished on every partition."""
        self.flush()
        self.fleet.wait(f"{what}: workers ready", self.fleet.ready)
        self.fleet.wait(f"{what}: group drained", self.progress.drained)
        self.fleet.wait(f"{what}: fan-outs finished", self.fan_outs_finished)

    def fan_outs_finished(self) -> bool:
        """Whether every alert in the index has its fan-out recorded finished for each
        partition of the locations topic, at the version installed (the documented Redis
        layout: ``p:alerts``, ``p:alert:{K}``, ``p:fanned:{K}``)."""
        p = self.settings.redis.key_prefix
        partitions = self.settings.topics.partitions
        client = redis.Redis.from_url(self.settings.redis.url)
        try:
            for raw_key in client.smembers(f"{p}:alerts"):
                key = raw_key.decode()
                record = client.get(f"{p}:alert:{{{key}}}")
                if record is None:
                    continue  # cancelled or expired meanwhile
                version = orjson.loads(record)["version"]
                fanned = {m.decode() for m in client.smembers(f"{p}:fanned:{{{key}}}")}
                if not {f"{version}:{q}" for q in range(partitions)} <= fanned:
                    return False
            return True
        except redis.RedisError:
            return False
        finally:
            client.close()

    def observe(self, alert_id: str, state: str, mark: str) -> dict[str, Any]:
        """Wait for the lifecycle event; record when it was observed."""

        def seen() -> dict[str, Any] | None:
            for msg in self.lifecycle.consume(500, timeout=0.1):
                if msg.error() is None and msg.value() is not None:
                    self.events.append(orjson.loads(msg.value()))
            return next(
                (e for e in self.events if (e["alert_id"], e["state"]) == (alert_id, state)),
                None,
            )

        event = self.fleet.wait(
            f"lifecycle event {state!r} of {alert_id}", seen, timeout_s=self.phase_timeout_s
        )
        self.marks[mark] = time.monotonic()
        assert_valid("lifecycle", event)
        return event

    def announcer(self, state: str) -> int | None:
        """The slot of a running worker that announced a lifecycle event in ``state``."""
        for slot in self.fleet.slots:
            if slot.process.running() and scraped(
                slot.process, "alertfeed_alert_lifecycle_total", state=state
            ):
                return slot.index
        return None


def scraped(worker: WorkerProcess, name: str, **labels: str) -> float:
    """A metric of a worker's /metrics; -1 when it cannot be read (restarting, say)."""
    try:
        return metric(worker, name, **labels)
    except OSError:
        return -1.0


def fault_of(faults: Sequence[Fault], ts_ms: int) -> int:
    """The index of the fault whose window (from it to the next fault) holds ``ts_ms``;
    -1 before the first."""
    found = -1
    for i, fault in enumerate(faults):
        if fault.wall_ms <= ts_ms:
            found = i
    return found


def duplicates_report(
    records: Sequence[RawEvent], faults: Sequence[Fault]
) -> tuple[dict[int, Counter[str]], list[str]]:
    """Per fault (by :func:`fault_of` of the duplicate's broker timestamp): duplicate
    records, how many byte-identical to the first, and which fields differ otherwise;
    plus every duplicate whose event_id differs from the first's."""
    first: dict[Pair, tuple[bytes, dict[str, Any]]] = {}
    table: dict[int, Counter[str]] = defaultdict(Counter)
    mismatched: list[str] = []
    # A user's cards are all on one partition (keyed by user): offsets order them.
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.value is not None
        card = orjson.loads(record.value)
        pair = (card["user_id"], card["alert_id"])
        if pair not in first:
            first[pair] = (record.value, card)
            continue
        raw, original = first[pair]
        row = table[fault_of(faults, record.timestamp_ms)]
        row["duplicates"] += 1
        if card["event_id"] != original["event_id"]:
            mismatched.append(f"{pair}: {original['event_id']} then {card['event_id']}")
        if record.value == raw:
            row["byte-identical"] += 1
        else:
            differing = sorted(k for k in card if card[k] != original.get(k))
            row["differ in " + ",".join(differing)] += 1
    return table, mismatched


def print_report(
    run: ChaosRun,
    cards: Sequence[RawEvent],
    table: dict[int, Counter[str]],
    lifecycle: Sequence[dict[str, Any]],
) -> None:
    print(f"\nchaos: {len(run.sent)} locations published, {len(cards)} cards read")
    print(f"{'fault':<58} {'at s':>6} {'dups':>5} {'same bytes':>10}  otherwise")
    rows = [(-1, Fault("(before the first fault)", 0, run.started)), *enumerate(run.faults)]
    for i, fault in rows:
        row = table.get(i, Counter())
        other = ", ".join(f"{k} {v}" for k, v in sorted(row.items()) if k.startswith("differ"))
        print(
            f"{fault.name:<58} {fault.mono - run.started:>6.1f} {row['duplicates']:>5} "
            f"{row['byte-identical']:>10}  {other}"
        )
    print(
        f"kills {run.fleet.kills}, exits on their own (slot, status) {run.fleet.self_exits}, "
        f"failed starts {run.fleet.failed_starts}; locations consumed {run.consumed:.0f} "
        f"(at least), dedup hits {run.dedup_hits:.0f}"
    )
    states = Counter((e["alert_id"], e["state"]) for e in lifecycle)
    print("lifecycle events: " + ", ".join(f"{a} {s} x{n}" for (a, s), n in states.items()))

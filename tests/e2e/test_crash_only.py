"""Crash-only on a real worker: a failure outside any one message (here, an alert record
in Redis that no longer decodes) ends the worker process at once with exit status 70 and
one CRITICAL line, instead of a Faust agent or timer being restarted in place; a worker
started after the cause is gone carries on from the committed offsets and loses nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import Settings
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json, now_ms
from tests.support.kafka import collect, produce_json, values
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

AUSTIN = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]


def test_a_bug_outside_any_message_ends_the_worker_and_a_restart_carries_on(
    settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    ensure_topics(settings)
    worker = start_worker(settings)
    alert = make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER)
    produce_json(settings, settings.topics.alerts, [(str(alert["id"]), alert)])
    collect(settings, settings.topics.lifecycle, until=lambda r: len(r) >= 1, settle_s=0)
    ts = now_ms()
    early = {
        f"early-{i}": {"user_id": f"early-{i}", "lat": 30.26, "lon": -97.76, "ts": ts}
        for i in range(20)
    }
    produce_json(settings, settings.topics.locations, list(early.items()))
    collect(settings, settings.topics.interstitials, until=lambda r: len(r) >= 20, settle_s=0)

    # Corrupt the view: an installed alert whose record is not JSON. Every worker reads the
    # registry on its gauge timer; that is no message's fault, so the worker must crash.
    prefix = settings.redis.key_prefix
    client = redis.Redis.from_url(settings.redis.url)
    client.set(f"{prefix}:alert:{{corrupt}}", b"\x00 not json")
    client.sadd(f"{prefix}:alerts", "corrupt")
    assert worker.proc is not None
    code = worker.proc.wait(60)
    assert code == 70
    log = worker.log_tail(100_000)
    assert "CRITICAL" in log and "worker crashed, exiting without committing" in log
    assert "Restarting" not in log

    # Locations published while no worker runs, and the cause removed: a new worker cards
    # them, and the users carded before are not carded again.
    client.delete(f"{prefix}:alert:{{corrupt}}")
    client.srem(f"{prefix}:alerts", "corrupt")
    late = {
        f"late-{i}": {"user_id": f"late-{i}", "lat": 30.26, "lon": -97.76, "ts": now_ms()}
        for i in range(20)
    }
    produce_json(settings, settings.topics.locations, [*late.items(), *early.items()])
    restarted = start_worker(settings)
    cards = values(
        collect(settings, settings.topics.interstitials, until=lambda r: len(r) >= 40, settle_s=3)
    )
    assert sorted(c["user_id"] for c in cards) == sorted([*early, *late])
    assert restarted.proc is not None and restarted.proc.poll() is None
    assert {c["alert_id"] for c in cards} == {alert["id"]}

"""Poison on a real worker: valid AMBER Alerts with malformed messages between them, on one
partition of the alerts topic. Nothing valid is lost, every malformed message reaches the
dead-letter topic with its exact bytes, the group's committed offset reaches the end of
the partition, and the worker never restarts. A hostile alert's geometry is covered in the
preparation process under its CPU budget while locations keep being matched."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import MatchSettings, Settings
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json, make_cap_xml, now_ms
from tests.support.kafka import collect, produce_json, values
from tests.support.live_replay import metric
from tests.support.schemas import assert_valid
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

WORLD = [(-89.0, -179.9), (-89.0, 179.9), (89.0, 179.9), (89.0, -179.9)]
AUSTIN = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]


def small_square(i: int) -> list[tuple[float, float]]:
    """A distinct ~1 km square in Texas for alert ``i``."""
    lat, lon = 29.0 + (i % 20) * 0.1, -99.0 + (i // 20) * 0.1
    return [(lat, lon), (lat, lon + 0.01), (lat + 0.01, lon + 0.01), (lat + 0.01, lon)]


def malformed_messages(valid: bytes) -> Iterator[tuple[str, bytes]]:
    """Labelled messages none of which may become an alert, each a different way to fail.
    Several are derived from ``valid`` (a real CAP AMBER Alert of ours)."""
    decl = b'<?xml version="1.0" encoding="UTF-8"?>'
    body = valid.removeprefix(decl)
    yield "unknown encoding", b'<?xml version="1.0" encoding="bogus-8"?>' + body
    yield "encoding that is not a text codec", b'<?xml version="1.0" encoding="zlib"?>' + body
    yield "truncated XML", valid[: len(valid) // 2]
    yield "empty", b""
    yield "whitespace", b"  \n\t "
    yield "binary garbage", bytes(range(256)) * 4
    yield "UTF-16 BOM with JSON", "\ufeff{}".encode("utf-16-le")
    yield "DOCTYPE", b"<?xml version='1.0'?><!DOCTYPE alert [<!ENTITY x 'y'>]>" + body
    yield "deep XML", b"<a>" * 50_000 + b"</a>" * 50_000
    yield "deep JSON", b"[" * 100_000 + b"]" * 100_000
    yield "JSON NaN", b'{"id": "x", "sender": "' + TEST_SENDER.encode() + b'", "lat": NaN}'
    yield "JSON number", b"12345678901234567890123456789012345678901234567890"
    yield "JSON list", b"[1, 2, 3]"
    yield "huge number", b'{"id": "x", "sent": 1e999999}'
    yield "not an alert root", b"<feed><entry/></feed>"
    yield "wrong namespace", valid.replace(b"cap:1.2", b"cap:9.9")
    yield "bad status", valid.replace(b"<status>Actual</status>", b"<status>Maybe</status>")
    yield "no sent time", valid.replace(b"<sent>", b"<unsent>").replace(b"</sent>", b"</unsent>")
    yield "latitude 95", valid.replace(b"<polygon>29.", b"<polygon>95.")
    yield "polygon of two points", valid.replace(b"<polygon>", b"<polygon>1,1 2,2</polygon><x>")
    yield "unknown sender", valid.replace(TEST_SENDER.encode(), b"mallory@example.invalid")
    yield "no area", make_cap_xml(sender=TEST_SENDER)
    yield "near the 1 MB limit", b"<" + b"x" * 900_000
    alert = make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER)
    yield "alert JSON with a string for areas", orjson.dumps({**alert, "areas": "everywhere"})
    yield "alert JSON with a number for an id", orjson.dumps({**alert, "id": 7})
    yield "alert JSON with a null polygon", orjson.dumps({**alert, "areas": [{"polygons": None}]})


def produce_to_partition_zero(settings: Settings, messages: list[bytes]) -> list[int]:
    """Produce ``messages`` in order to partition 0 of the alerts topic; their offsets."""
    producer = Producer({**settings.kafka.confluent_config(), "enable.idempotence": True})
    offsets: dict[int, int] = {}
    for i, value in enumerate(messages):

        def delivered(err: object, msg: object, i: int = i) -> None:
            assert err is None, err
            offsets[i] = msg.offset()  # type: ignore[attr-defined]

        producer.produce(
            settings.topics.alerts, value, key=b"k%d" % i, partition=0, on_delivery=delivered
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    return [offsets[i] for i in range(len(messages))]


def committed_offset(settings: Settings, partition: int) -> int:
    consumer = Consumer({**settings.kafka.confluent_config(), "group.id": settings.app_id})
    try:
        [tp] = consumer.committed([TopicPartition(settings.topics.alerts, partition)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def end_offset(settings: Settings, partition: int) -> int:
    consumer = Consumer({**settings.kafka.confluent_config(), "group.id": "end-offsets"})
    try:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(settings.topics.alerts, partition), timeout=10
        )
        return int(high)
    finally:
        consumer.close()


def test_valid_alerts_behind_malformed_ones_are_all_issued(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    settings = make_settings(
        match=MatchSettings(resolution=10, batch_size=500, alert_cpu_budget_s=3.0)
    )
    ensure_topics(settings)
    worker = start_worker(settings)
    pid = worker.proc.pid if worker.proc else None

    valid = [
        make_cap_xml(sender=TEST_SENDER, polygons=[small_square(i)], identifier=f"AMBER-{i:03d}")
        for i in range(120)
    ]
    bad = [m for _ in range(2) for m in malformed_messages(valid[0])]
    # Two hostile geometries too: guardrails, in the preparation process under 3 s of CPU.
    hostile = make_cap_xml(sender=TEST_SENDER, polygons=[WORLD], identifier="WORLD")
    bad += [("hostile polygon", hostile), ("hostile polygon", hostile.replace(b"WORLD", b"W2"))]
    assert len(bad) >= 50
    # Interleave: two malformed messages between each pair of valid ones, the rest at the end.
    messages: list[tuple[str | None, bytes]] = []
    queue = list(bad)
    for alert in valid:
        messages.append((None, alert))
        for _ in range(2):
            if queue:
                messages.append(queue.pop(0))
    messages.extend(queue)
    offsets = produce_to_partition_zero(settings, [m for _, m in messages])
    bad_at = {
        off: (label, msg) for off, (label, msg) in zip(offsets, messages, strict=True) if label
    }

    lifecycle = values(
        collect(
            settings,
            settings.topics.lifecycle,
            until=lambda r: len(r) >= len(valid),
            timeout_s=240,
            settle_s=2,
        )
    )
    issued = {e["alert_id"] for e in lifecycle if e["state"] == "issued"}
    assert issued == {f"AMBER-{i:03d}" for i in range(120)}

    dead = values(
        collect(settings, settings.topics.dlq, until=lambda r: len(r) >= len(bad_at), timeout_s=120)
    )
    by_offset = {d["source"]["offset"]: d for d in dead}
    assert len(dead) == len(bad_at), "each malformed message is dead-lettered exactly once"
    assert set(by_offset) == set(bad_at)
    for off, (label, msg) in bad_at.items():
        letter = by_offset[off]
        assert base64.b64decode(letter["value_b64"]) == msg, label
        assert letter["reason"], label
        assert letter["source"]["partition"] == 0
        assert_valid("dead_letter", letter)
    hostile_classes = {
        by_offset[o]["reason_class"] for o, (lb, _) in bad_at.items() if "hostile" in lb
    }
    assert hostile_classes == {"guardrail"}

    end = end_offset(settings, 0)
    assert end == offsets[-1] + 1
    deadline = time.monotonic() + 30
    while committed_offset(settings, 0) < end:
        assert time.monotonic() < deadline, "the group's committed offset did not reach the end"
        time.sleep(0.5)

    assert worker.proc is not None and worker.proc.poll() is None, "the worker exited"
    assert worker.proc.pid == pid
    log = worker.log_tail(200_000)
    assert "worker crashed" not in log and "Restarting" not in log


def test_locations_are_matched_while_a_hostile_alert_is_being_covered(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    settings = make_settings(
        match=MatchSettings(resolution=10, batch_size=500, alert_cpu_budget_s=8.0)
    )
    ensure_topics(settings)
    worker = start_worker(settings)
    alert = make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER)
    produce_json(settings, settings.topics.alerts, [(str(alert["id"]), alert)])
    collect(settings, settings.topics.lifecycle, until=lambda r: len(r) >= 1, settle_s=0)
    # A first location: a fresh index is built (from the alerts topic) on the first match.
    first = {"user_id": "first", "lat": 30.26, "lon": -97.76, "ts": now_ms()}
    produce_json(settings, settings.topics.locations, [("first", first)])
    collect(settings, settings.topics.interstitials, until=lambda r: len(r) >= 1, settle_s=0)

    sent = datetime.now(UTC) + timedelta(seconds=1)
    hostile = make_alert_json(polygons=[WORLD], sender=TEST_SENDER, sent=sent)
    produce_json(settings, settings.topics.alerts, [(str(hostile["id"]), hostile)])
    deadline = time.monotonic() + 30
    while metric(worker, "alertfeed_alerts_preparing") < 1:
        assert time.monotonic() < deadline, "the worker never started covering the alert"
        time.sleep(0.05)

    users = [f"walker-{i}" for i in range(50)]
    produce_json(
        settings,
        settings.topics.locations,
        [(u, {"user_id": u, "lat": 30.26, "lon": -97.76, "ts": now_ms()}) for u in users],
    )
    cards = values(
        collect(settings, settings.topics.interstitials, until=lambda r: len(r) >= 51, settle_s=0)
    )
    assert {c["user_id"] for c in cards} == {"first", *users}
    # Still covering the hostile alert when every card was out: the join did not wait.
    assert metric(worker, "alertfeed_alerts_preparing") == 1

    [dead] = values(collect(settings, settings.topics.dlq, until=lambda r: len(r) >= 1, settle_s=0))
    assert dead["reason_class"] == "guardrail"
    assert "CPU budget of 8s" in dead["reason"]
    assert metric(worker, "alertfeed_alerts_preparing") == 0

"""The confluent-kafka tools (pipeline/adapters/kafka/tools.py) against the real broker of
the test session: creating the topics, producing with delivery checks, and reading the
alert log an index rebuild starts from."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from pipeline.adapters.kafka.tools import DeliveryProducer, ensure_topics, read_alert_log
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.deadletter import dead_letter
from pipeline.errors import BrokerUnavailable, MalformedEvent
from pipeline.settings import KafkaSettings, Settings
from tests.support.cli import UNREACHABLE_KAFKA
from tests.support.kafka import collect

pytestmark = pytest.mark.integration

# What a broker accepts by default (message.max.bytes): the largest record a producer can
# have sent to any of our input topics, and so the largest message we may dead-letter.
BROKER_DEFAULT_MAX_BYTES = 1_048_588
# librdkafka's own limit, raised so that only the topics' limits are tested.
LARGE_PRODUCER = {"message.max.bytes": 16 * 1024 * 1024, "compression.type": "none"}


def admin(settings: Settings) -> AdminClient:
    return AdminClient(dict(settings.kafka.confluent_config()))


def topic_configs(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configuration as the broker reports it. A topic just created may not
    have reached the broker's metadata yet: asked again until it has (up to 30 s)."""
    client = admin(settings)  # kept until the futures are done: they die with it
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    deadline = time.monotonic() + 30
    while True:
        try:
            return {
                resource.name: {k: entry.value for k, entry in future.result(timeout=30).items()}
                for resource, future in client.describe_configs(resources).items()
            }
        except KafkaException as exc:
            unknown = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def partition_counts(settings: Settings) -> dict[str, int]:
    topics = admin(settings).list_topics(timeout=30).topics
    return {name: len(meta.partitions) for name, meta in topics.items()}


def unreachable() -> Settings:
    return Settings(kafka=KafkaSettings(url=UNREACHABLE_KAFKA))


# librdkafka would log every failed connection to port 1 on stderr until the client is
# collected; what these tests check is the exception.
QUIET = {"log_level": 0}


# -- ensure_topics -------------------------------------------------------------------------
def test_ensure_topics_creates_every_topic_with_the_configured_partitions(
    settings: Settings,
) -> None:
    names = settings.topics.by_logical_name()
    assert sorted(ensure_topics(settings)) == sorted(names.values())
    counts = partition_counts(settings)
    assert {logical: counts.get(name) for logical, name in names.items()} == dict.fromkeys(
        names, settings.topics.partitions
    )


def test_the_alerts_topic_is_compacted_and_the_others_are_time_retained(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    names = settings.topics.by_logical_name()
    configs = topic_configs(settings, list(names.values()))
    policies = {logical: configs[name]["cleanup.policy"] for logical, name in names.items()}
    assert policies == {
        "alerts": "compact",
        "locations": "delete",
        "interstitials": "delete",
        "lifecycle": "delete",
        "dlq": "delete",
    }


def test_the_dead_letter_of_the_largest_acceptable_message_fits_the_dlq_topic(
    settings: Settings,
) -> None:
    """A poison message as large as the broker lets a producer send (its bytes kept, as
    base64, plus the reason) can still be dead-lettered; a record that size would not fit
    an ordinary topic."""
    ensure_topics(settings)
    poison = RawEvent(
        settings.topics.locations,
        0,
        7,
        1_795_400_000_000,
        b"user",
        os.urandom(BROKER_DEFAULT_MAX_BYTES - 1024),
    )
    reason = MalformedEvent("location is not valid JSON")
    record = orjson.dumps(
        dead_letter(poison, reason, logical_topic="locations", now_ms=1_795_400_000_001)
    )
    assert len(record) > BROKER_DEFAULT_MAX_BYTES

    producer = DeliveryProducer(settings, **LARGE_PRODUCER)
    producer.send(settings.topics.dlq, record, key=b"locations:0:7")
    assert producer.flush() == 1

    ordinary = DeliveryProducer(settings, **LARGE_PRODUCER)
    ordinary.send(settings.topics.interstitials, record, key=b"user")
    with pytest.raises(BrokerUnavailable):
        ordinary.flush()


def test_ensure_topics_is_idempotent_and_creates_only_what_is_missing(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    before = topic_configs(settings, list(settings.topics.by_logical_name().values()))
    assert ensure_topics(settings) == []
    assert topic_configs(settings, list(before)) == before

    renamed = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"dlq": f"{settings.topics.dlq}2"})}
    )
    assert ensure_topics(renamed) == [renamed.topics.dlq]


def test_ensure_topics_raises_broker_unavailable_when_no_broker_answers() -> None:
    with pytest.raises(BrokerUnavailable):
        ensure_topics(unreachable(), timeout_s=2)


# -- DeliveryProducer ----------------------------------------------------------------------
def test_flush_counts_every_record_the_broker_acknowledged(settings: Settings) -> None:
    ensure_topics(settings)
    topic = settings.topics.locations
    producer = DeliveryProducer(settings)
    for i in range(25):
        producer.send(topic, f"value-{i}".encode(), key=f"user-{i % 7}".encode())
    assert producer.flush() == 25
    for i in range(25, 30):
        producer.send(topic, f"value-{i}".encode(), key=f"user-{i % 7}".encode())
    assert producer.flush() == 30, "the count is of this producer's whole life"

    stored = collect(settings, topic, until=lambda r: len(r) >= 30, settle_s=1)
    assert sorted(r.value for r in stored if r.value) == sorted(
        f"value-{i}".encode() for i in range(30)
    )


def test_flush_raises_broker_unavailable_when_delivery_times_out() -> None:
    producer = DeliveryProducer(unreachable(), **QUIET, **{"message.timeout.ms": 1500})
    for i in range(3):
        producer.send("alertfeed.locations", b"{}", key=f"user-{i}".encode())
    with pytest.raises(BrokerUnavailable, match="3 records failed"):
        producer.flush(timeout_s=30)
    assert producer.delivered == 0


def test_flush_raises_broker_unavailable_when_its_own_wait_runs_out() -> None:
    producer = DeliveryProducer(unreachable(), **QUIET, **{"message.timeout.ms": 2000})
    producer.send("alertfeed.locations", b"{}", key=b"user")
    with pytest.raises(BrokerUnavailable, match="not delivered within"):
        producer.flush(timeout_s=0.2)
    assert producer.delivered == 0


# -- read_alert_log ------------------------------------------------------------------------
def publish(settings: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = DeliveryProducer(settings)
    for key, value in records:
        producer.send(settings.topics.alerts, value, key=key)
    producer.flush()


def alert_records(count: int) -> list[tuple[bytes, bytes | None]]:
    """Alert messages keyed by alert, a few alerts with an Update after them, and one
    alert deleted by a tombstone (a null value, as compaction keeps it for a while)."""
    records: list[tuple[bytes, bytes | None]] = [
        (f"alert-{i}".encode(), orjson.dumps({"id": f"alert-{i}", "msg_type": "Alert"}))
        for i in range(count)
    ]
    records += [
        (f"alert-{i}".encode(), orjson.dumps({"id": f"update-{i}", "msg_type": "Update"}))
        for i in range(0, count, 5)
    ]
    records.append((b"alert-1", None))
    return records


def as_published(events: list[RawEvent]) -> Counter[tuple[bytes | None, bytes | None]]:
    return Counter((e.key, e.value) for e in events)


def test_read_alert_log_reads_every_message_up_to_the_end(settings: Settings) -> None:
    ensure_topics(settings)
    records = alert_records(40)
    publish(settings, records)

    log = read_alert_log(settings)
    assert as_published(log) == Counter(records)
    assert {e.topic for e in log} == {settings.topics.alerts}
    offsets: defaultdict[int, list[int]] = defaultdict(list)
    for event in log:
        offsets[event.partition].append(event.offset)
    assert len(offsets) > 1, "the messages were spread over partitions"
    for partition, seen in offsets.items():
        assert seen == list(range(len(seen))), f"partition {partition} has a gap or disorder"


def test_read_alert_log_commits_nothing_so_every_rebuild_reads_it_all(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    publish(settings, alert_records(10))
    first = read_alert_log(settings)
    publish(settings, [(b"alert-late", b'{"id": "alert-late"}')])
    second = read_alert_log(settings)
    assert as_published(second) == as_published(first) + Counter(
        [(b"alert-late", b'{"id": "alert-late"}')]
    )


def test_read_alert_log_of_an_empty_topic_is_empty(settings: Settings) -> None:
    ensure_topics(settings)
    assert read_alert_log(settings, timeout_s=10) == []


def test_read_alert_log_raises_broker_unavailable_without_an_alerts_topic(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(BrokerUnavailable, match="not available"):
        read_alert_log(make_settings(), timeout_s=10)

"""deploy/local/localstack.py's fault injection: each service stops and starts again on its
own, the broker on its own data and cluster id, Redis empty."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import KafkaSettings, Settings, TopicSettings
from tests.support.kafka import produce, read_to_end
from tests.support.services import load_localstack

pytestmark = pytest.mark.integration


def test_broker_restarts_on_its_data_and_redis_restarts_empty(tmp_path: Path) -> None:
    localstack = load_localstack()
    stack = localstack.LocalStack(tmp_path / "stack")
    stack.start()
    try:
        state = stack.state
        kafka_port, redis_port, cluster_id = state.kafka_port, state.redis_port, state.cluster_id
        settings = Settings(
            kafka=KafkaSettings(url=f"kafka://{state.bootstrap_servers}"),
            topics=TopicSettings(partitions=2),
        )
        ensure_topics(settings)
        topic = settings.topics.locations
        before = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)]
        produce(settings, topic, before)

        stack.stop_kafka()
        assert not localstack.port_open(kafka_port)
        stack.start_kafka()
        assert (state.kafka_port, state.cluster_id) == (kafka_port, cluster_id)
        meta = (tmp_path / "stack" / "kafka" / "data" / "meta.properties").read_text()
        assert f"cluster.id={cluster_id}" in meta
        produce(settings, topic, [(b"after", b"after")])  # it takes writes again
        assert sorted(r.value for r in read_to_end(settings, topic)) == sorted(
            [v for _, v in before] + [b"after"]
        )

        client = redis.Redis(port=redis_port)
        client.set("survives?", "no")
        client.save()  # a dump.rdb on disk must not bring it back
        client.close()
        stack.restart_redis()
        assert state.redis_port == redis_port
        with redis.Redis(port=redis_port) as fresh:
            assert fresh.dbsize() == 0

        attached = localstack.LocalStack.attach(tmp_path / "stack")
        assert attached is not None and attached.alive()
        assert (attached.state.kafka_pid, attached.state.redis_pid) == (
            state.kafka_pid,
            state.redis_pid,
        )
    finally:
        stack.stop()
    assert not stack.alive()
    assert not (tmp_path / "stack" / "stack.json").exists()

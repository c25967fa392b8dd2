"""One fixture layer for all tests: the real Kafka broker and Redis server, settings with
private topic names per test, and real worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.settings import (
    KafkaSettings,
    MatchSettings,
    MetricsSettings,
    PolicySettings,
    RedisSettings,
    Settings,
    TopicSettings,
)
from tests.support.redis_cluster import ClusterStartError, LocalRedisCluster
from tests.support.services import Services, external_services, free_port, load_localstack
from tests.support.worker import WorkerProcess

TEST_SENDER = "amber@dps.texas.example"
TEST_USERS = ("tester-1", "tester-2")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    external = external_services()
    if external is not None:
        yield external
        return
    localstack = load_localstack()
    stack = localstack.LocalStack(tmp_path_factory.mktemp("stack"))
    try:
        state = stack.start()
    except localstack.StackError as exc:
        pytest.fail(f"cannot start the real Kafka/Redis for the tests: {exc}", pytrace=False)
    try:
        yield Services(state.bootstrap_servers, state.redis_url)
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a private three-master Redis Cluster (a startup node), started on first
    use and stopped at the end of the session."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        url = cluster.start()
    except ClusterStartError as exc:
        pytest.fail(f"cannot start the real Redis Cluster for the tests: {exc}", pytrace=False)
    try:
        yield url
    finally:
        cluster.stop()


@pytest.fixture
def make_settings(services: Services, tmp_path: Path) -> Callable[..., Settings]:
    """Settings with topics, consumer group and Redis keys private to this test."""

    def make(**overrides: object) -> Settings:
        uid = uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "app_id": f"alertfeed-test-{uid}",
            "kafka": KafkaSettings(url=f"kafka://{services.bootstrap_servers}"),
            "redis": RedisSettings(url=services.redis_url, key_prefix=f"af{uid}"),
            "topics": TopicSettings(
                alerts=f"t{uid}.alerts",
                locations=f"t{uid}.locations",
                interstitials=f"t{uid}.interstitials",
                lifecycle=f"t{uid}.lifecycle",
                dlq=f"t{uid}.dlq",
                partitions=3,
            ),
            "match": MatchSettings(resolution=10, batch_size=500, batch_within_s=0.05),
            "policy": PolicySettings(allowed_senders=[TEST_SENDER], test_users=list(TEST_USERS)),
            "metrics": MetricsSettings(host="127.0.0.1", port=free_port()),
            "data_dir": str(tmp_path / f"worker-{uid}"),
            "log_level": "INFO",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()

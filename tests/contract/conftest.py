"""The Redis clients the contract tests hold the adapters to: the single server of the
session, and a private Redis Cluster, where every key must work unchanged."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis, RedisCluster

from pipeline.adapters.redis.client import redis_client
from tests.support.redis_cluster import cluster_client
from tests.support.services import Services


@pytest.fixture
def connect(request: pytest.FixtureRequest) -> Callable[[str], Redis | RedisCluster]:
    """``connect(variant)``: a new client for ``variant``, starting its server on first use.
    Call it inside the test's event loop; the caller closes the client."""

    def connect(variant: str) -> Redis | RedisCluster:
        if variant == "redis-cluster":
            return cluster_client(request.getfixturevalue("redis_cluster"))
        assert variant == "redis", variant
        services: Services = request.getfixturevalue("services")
        return redis_client(services.redis_url, password=None, socket_timeout_s=5)

    return connect

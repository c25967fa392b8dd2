"""The real Kafka broker and Redis server of a test session.

If ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` are both set, those are used. Otherwise a
private broker and Redis server are started on free ports (deploy/local/localstack.py, the
same launcher as ``make up``) and stopped at the end. If they cannot start, the session
fails with a message naming what is missing: integration tests are never skipped.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_localstack() -> ModuleType:
    path = ROOT / "deploy" / "local" / "localstack.py"
    spec = importlib.util.spec_from_file_location("alertfeed_localstack", path)
    assert spec and spec.loader
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Services:
    bootstrap_servers: str
    redis_url: str


class ServiceError(RuntimeError):
    pass


def external_services() -> Services | None:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis = os.environ.get("REDIS_URL")
    if kafka and redis:
        return Services(kafka, redis)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

"""The one settings object. Built once in the entrypoint and passed down; nothing else
reads the environment.

Every field can be set from the environment with the ``ALERTFEED_`` prefix and ``__`` for
nesting, for example::

    ALERTFEED_KAFKA__URL=kafka://broker-1:9092,broker-2:9092
    ALERTFEED_REDIS__URL=redis://:secret@redis:6379/0
    ALERTFEED_MATCH__RESOLUTION=10
    ALERTFEED_POLICY__ALLOWED_SENDERS='["w-nws.webmaster@noaa.gov","amber@ncmec.org"]'

Connection strings parse into typed settings, like arq's ``RedisSettings.from_dsn``.

Every tunable of the worker is a field here, with its reason in a comment beside it; the
pacing ones, with their defaults:

* ``match.batch_size`` / ``match.batch_within_s`` (1000 / 0.02 s): a location batch;
* ``match.alert_batch_size`` / ``match.alert_batch_within_s`` (16 / 0.05 s): an alerts batch;
* ``match.fanout_hold_chunks`` (10): fan-out chunks per hold of the carding lock;
* ``match.fanout_retry_s`` (1 s): pause before an interrupted fan-out starts over;
* ``match.fanout_poll_s`` (0.2 s): how often a worker looks for alerts to fan out over its
  partitions (one round trip when nothing changed);
* ``match.retry_max_backoff_s`` (30 s): backoff cap while Kafka or Redis is down;
* ``match.expiry_check_s`` (5 s): how often alerts due to expire are expired;
* ``match.index_recheck_s`` (5 s): how often the worker's index replica compares itself
  with Redis even when no change was counted, and the fan-outs read again which of them
  Redis records finished;
* ``metrics.gauge_interval_s`` (5 s): how often the gauges (consumer lag included) are read;
* ``kafka.commit_interval_s`` (1 s) and ``kafka.session_timeout_s`` (10 s): consumer group.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigurationError


class KafkaSettings(BaseModel):
    """``url`` is ``kafka://host:port[,host:port...]``."""

    url: str = "kafka://127.0.0.1:9092"
    client_id: str = "alertfeed"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # A worker that dies without leaving the group (SIGKILL, a crash-only exit) keeps its
    # partitions this long before the group hands them on: the redelivery delay of a crash.
    session_timeout_s: float = Field(default=10.0, ge=6.0, le=300.0)
    # How often the worker commits the offsets of the batches it acknowledged: a crash
    # redelivers up to this much more than it must (consumers dedupe on event_id).
    commit_interval_s: float = Field(default=1.0, gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parse_kafka_url(value)
        return value

    @property
    def bootstrap_servers(self) -> list[str]:
        return parse_kafka_url(self.url)

    def confluent_config(self) -> dict[str, str | int | float | bool]:
        """Client configuration for confluent-kafka (librdkafka property names)."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": ",".join(self.bootstrap_servers),
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        return config


def parse_kafka_url(url: str) -> list[str]:
    """``kafka://h1:9092,h2:9092`` (or a bare ``h1:9092,h2``) into ``["h1:9092", "h2:9092"]``."""
    body = url.split("://", 1)[1] if "://" in url else url
    if url.startswith(("kafka://", "aiokafka://")) or "://" not in url:
        servers = [part.strip() for part in body.strip("/").split(",") if part.strip()]
        if servers:
            return [s if ":" in s else f"{s}:9092" for s in servers]
    raise ValueError(f"not a Kafka URL (kafka://host:port[,host:port]): {url!r}")


class RedisSettings(BaseModel):
    """``url`` is ``redis://[user:password@]host:port/db`` or ``rediss://`` for TLS."""

    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    key_prefix: str = "af"
    socket_timeout_s: float = 5.0
    cluster: bool = False

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            _ = parts.port  # raises for a port that is not a number in 0-65535
            port_ok = True
        except ValueError:
            port_ok = False
        db = parts.path.strip("/")
        db_ok = not db or (db.isascii() and db.isdigit())
        if (
            parts.scheme not in ("redis", "rediss")
            or not parts.hostname
            or not port_ok
            or not db_ok
        ):
            raise ValueError(f"not a Redis URL (redis://host:port/db): {value!r}")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379

    @property
    def db(self) -> int:
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path else 0

    @property
    def ssl(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        raw = urlsplit(self.url).password
        return unquote(raw) if raw else None


class TopicSettings(BaseModel):
    """Real topic names of the logical topics. ``partitions`` is used when creating them."""

    alerts: str = "alertfeed.alerts"
    locations: str = "alertfeed.locations"
    interstitials: str = "alertfeed.interstitials"
    lifecycle: str = "alertfeed.lifecycle"
    dlq: str = "alertfeed.dlq"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def by_logical_name(self) -> dict[str, str]:
        return {
            "alerts": self.alerts,
            "locations": self.locations,
            "interstitials": self.interstitials,
            "lifecycle": self.lifecycle,
            "dlq": self.dlq,
        }


class MatchSettings(BaseModel):
    """How the worker matches, batches, fans out and retries."""

    resolution: int = Field(default=10, ge=0, le=15)
    # A location batch: up to batch_size events, or what came within batch_within_s.
    batch_size: int = Field(default=1000, ge=1)
    batch_within_s: float = Field(default=0.02, gt=0)
    # Location batches handled at once: the next is located while one's cards are acked.
    batches_in_flight: int = Field(default=2, ge=1)
    # An alerts batch, the same way. Each alert message is still handled on its own; the
    # batch only bounds how many the agent takes (and acknowledges) at a time.
    alert_batch_size: int = Field(default=16, ge=1)
    alert_batch_within_s: float = Field(default=0.05, gt=0)
    # Users per fan-out chunk (one publish, one dedup record), and chunks per hold of the
    # carding lock: a location batch waits at most about this many chunks' time while a
    # state-wide fan-out runs.
    fanout_chunk: int = Field(default=10_000, ge=1)
    fanout_hold_chunks: int = Field(default=10, ge=1)
    # Pause before a fan-out interrupted by a Redis failure starts over.
    fanout_retry_s: float = Field(default=1.0, ge=0)
    # How often each worker looks for installed alerts whose fan-out over its partitions
    # is not finished (a new alert, a partition gained): a new alert reaches the workers
    # that did not install it within this (the one that did starts at once).
    fanout_poll_s: float = Field(default=0.2, gt=0)
    # Cap of the exponential backoff (from 0.1 s, doubling) while Kafka or Redis is down.
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    # At most about 12 days: presence records a sighting's time in 30 bits of ms.
    freshness_s: float = Field(default=1800.0, gt=0, le=1_073_741.0)
    # Users whose presence place the worker remembers, to skip rewriting it (0: off).
    presence_known_users: int = Field(default=1_000_000, ge=0)
    expiry_check_s: float = Field(default=5.0, gt=0)
    # The worker's in-process replica of the alert index follows every counted change at
    # its next batch; it also compares itself with Redis this often, for a change whose
    # count was lost (a writer cut off between change and count) or a record Redis expired.
    # The fan-outs read their finished records from Redis again as often.
    index_recheck_s: float = Field(default=5.0, gt=0)
    max_vertices: int = Field(default=500_000, ge=3)
    max_shapes: int = Field(default=1_000, ge=1)
    max_cells: int = Field(default=3_000_000, ge=1)
    # One alert message's parse + cover, in the worker's preparation process: CPU seconds
    # (the kernel's RLIMIT_CPU) and, for a starved machine, wall-clock seconds. Past either
    # the message is dead-lettered as a guardrail. A cold Texas cover takes 4-7 s.
    alert_cpu_budget_s: float = Field(default=15.0, gt=0)
    alert_wall_budget_s: float = Field(default=120.0, gt=0)
    # Computed covers kept on disk (`alertfeed covers warm` fills it); 0 MB turns it off.
    cover_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "alertfeed" / "covers"
    )
    cover_cache_mb: int = Field(default=1024, ge=0)


class PolicySettings(BaseModel):
    """Who may interrupt feeds. Empty ``allowed_senders`` admits nobody: safe by default."""

    allowed_senders: list[str] = Field(default_factory=list)
    test_users: list[str] = Field(default_factory=list)


class MetricsSettings(BaseModel):
    """The worker's HTTP endpoints (/metrics, /healthz, /ready, /alerts/reach)."""

    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)
    # How often the active-alert, cover and consumer-lag gauges are re-read; also the
    # timeout of one lag sample.
    gauge_interval_s: float = Field(default=5.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ALERTFEED_", env_nested_delimiter="__", extra="ignore"
    )

    app_id: str = "alertfeed"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    match: MatchSettings = Field(default_factory=MatchSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    data_dir: str = ".alertfeed-data"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment for a child process (a worker) that rebuilds exactly ``settings``:
    this process's environment without its ALERTFEED_* variables, plus ``settings`` as
    ALERTFEED_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTFEED_")}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(f"{prefix}__{name.upper()}" if prefix else name.upper(), getattr(value, name))
        elif value is None:
            return
        elif isinstance(value, list | dict):
            env[f"ALERTFEED_{prefix}"] = json.dumps(value)
        elif isinstance(value, SecretStr):
            env[f"ALERTFEED_{prefix}"] = value.get_secret_value()
        else:
            env[f"ALERTFEED_{prefix}"] = str(value)

    walk("", settings)
    return env


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment plus explicit overrides (entrypoints only)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError(f"invalid settings: {exc}") from exc

"""The one settings object (pipeline/settings.py): the environment as an operator writes it,
connection strings, secrets, and the environment handed to a worker process.

Settings read from an environment are built in a child process given exactly that
environment (as the worker is started), never by changing this process's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pipeline.errors import ConfigurationError
from pipeline.settings import (
    KafkaSettings,
    MatchSettings,
    MetricsSettings,
    PolicySettings,
    RedisSettings,
    Settings,
    TopicSettings,
    child_environment,
    load_settings,
    parse_kafka_url,
)
from tests.support.environments import error_from, in_child, settings_from


# -- the environment -----------------------------------------------------------------------
def test_prefixed_variables_with_double_underscore_nesting_set_every_section() -> None:
    s = settings_from(
        {
            "ALERTFEED_APP_ID": "feed-eu",
            "ALERTFEED_KAFKA__URL": "kafka://broker-1:9093,broker-2",
            "ALERTFEED_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "ALERTFEED_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "ALERTFEED_KAFKA__SASL_USERNAME": "alertfeed",
            "ALERTFEED_KAFKA__SASL_PASSWORD": "kafka-pw",
            "ALERTFEED_REDIS__URL": "rediss://cache.internal:6380/3",
            "ALERTFEED_REDIS__PASSWORD": "redis-pw",
            "ALERTFEED_TOPICS__PARTITIONS": "24",
            "ALERTFEED_TOPICS__ALERTS": "eu.alerts",
            "ALERTFEED_MATCH__RESOLUTION": "9",
            "ALERTFEED_POLICY__ALLOWED_SENDERS": '["amber@ncmec.org","w-nws.webmaster@noaa.gov"]',
            "ALERTFEED_POLICY__TEST_USERS": '["qa-1"]',
            "ALERTFEED_METRICS__PORT": "9200",
            "ALERTFEED_LOG_LEVEL": "WARNING",
        }
    )
    assert s.app_id == "feed-eu"
    assert s.kafka.bootstrap_servers == ["broker-1:9093", "broker-2:9092"]
    kafka = s.kafka.confluent_config()
    assert kafka["bootstrap.servers"] == "broker-1:9093,broker-2:9092"
    assert (kafka["security.protocol"], kafka["sasl.mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (kafka["sasl.username"], kafka["sasl.password"]) == ("alertfeed", "kafka-pw")
    assert (s.redis.host, s.redis.port, s.redis.db, s.redis.ssl) == (
        "cache.internal",
        6380,
        3,
        True,
    )
    assert s.redis.resolved_password() == "redis-pw"
    assert (s.topics.partitions, s.topics.alerts) == (24, "eu.alerts")
    assert s.topics.locations == TopicSettings().locations, "unset names keep their default"
    assert s.match.resolution == 9
    assert s.policy.allowed_senders == ["amber@ncmec.org", "w-nws.webmaster@noaa.gov"]
    assert s.policy.test_users == ["qa-1"]
    assert s.metrics.port == 9200
    assert s.log_level == "WARNING"


def test_variables_without_the_prefix_or_without_nesting_are_not_read() -> None:
    defaults = settings_from({})
    s = settings_from(
        {
            "KAFKA__URL": "kafka://elsewhere:9092",
            "REDIS_URL": "redis://elsewhere:6379/0",
            "APP_ID": "not-ours",
            "ALERTFEED_KAFKA_URL": "kafka://single-underscore:9092",
            "ALERTFEED_NO_SUCH_SETTING": "1",
        }
    )
    assert s == defaults
    assert s.kafka.bootstrap_servers == ["127.0.0.1:9092"]


def test_with_no_allowed_senders_configured_nobody_may_send() -> None:
    assert settings_from({}).policy.allowed_senders == []


# -- Kafka connection strings --------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://broker-1:9092,broker-2:9092", ["broker-1:9092", "broker-2:9092"]),
        ("kafka://broker", ["broker:9092"]),
        ("kafka://b1:19092, b2 ,b3:9093/", ["b1:19092", "b2:9092", "b3:9093"]),
        ("b1:9092,b2", ["b1:9092", "b2:9092"]),
        ("kafka://127.0.0.1:1", ["127.0.0.1:1"]),
    ],
)
def test_a_kafka_url_names_the_bootstrap_servers_with_9092_by_default(
    url: str, servers: list[str]
) -> None:
    assert parse_kafka_url(url) == servers
    assert KafkaSettings(url=url).bootstrap_servers == servers


@pytest.mark.parametrize(
    "url", ["redis://broker:9092", "http://broker:9092", "kafka://", "kafka://,,", "", " "]
)
def test_a_url_that_names_no_kafka_broker_is_refused_with_the_url_quoted(url: str) -> None:
    with pytest.raises(ValueError, match="not a Kafka URL") as caught:
        parse_kafka_url(url)
    assert repr(url) in str(caught.value)
    with pytest.raises(ValidationError, match="not a Kafka URL"):
        KafkaSettings(url=url)


# -- Redis connection strings --------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://cache:6380/2", ("cache", 6380, 2, False)),
        ("redis://cache", ("cache", 6379, 0, False)),
        ("redis://cache/", ("cache", 6379, 0, False)),
        ("rediss://cache.internal", ("cache.internal", 6379, 0, True)),
        ("rediss://:pw@10.0.0.7:6390/15", ("10.0.0.7", 6390, 15, True)),
    ],
)
def test_a_redis_url_gives_host_port_db_and_tls(
    url: str, where: tuple[str, int, int, bool]
) -> None:
    r = RedisSettings(url=url)
    assert (r.host, r.port, r.db, r.ssl) == where


def test_the_redis_password_comes_from_the_setting_before_the_url() -> None:
    assert RedisSettings(url="redis://cache:6379/0").resolved_password() is None
    assert RedisSettings(url="redis://:from-url@cache:6379/0").resolved_password() == "from-url"
    assert RedisSettings(url="redis://user:p%40ss%3Aw@cache/0").resolved_password() == "p@ss:w"
    explicit = RedisSettings(url="redis://:from-url@cache:6379/0", password=SecretStr("set"))
    assert explicit.resolved_password() == "set"


def test_a_redis_password_in_the_environment_overrides_the_one_in_the_url() -> None:
    s = settings_from(
        {
            "ALERTFEED_REDIS__URL": "redis://:from-url@cache:6379/0",
            "ALERTFEED_REDIS__PASSWORD": "from-env",
        }
    )
    assert s.redis.resolved_password() == "from-env"


@pytest.mark.parametrize(
    "url",
    [
        "http://cache:6379/0",
        "cache:6379",
        "redis://",
        "redis:///0",
        "redis://cache:99999/0",
        "redis://cache:port/0",
        "redis://cache:6379/not-a-db",
    ],
)
def test_a_redis_url_that_cannot_work_is_refused_when_the_settings_are_built(url: str) -> None:
    with pytest.raises(ValidationError, match="Redis URL"):
        RedisSettings(url=url)


# -- secrets -------------------------------------------------------------------------------
def test_passwords_never_appear_in_the_settings_repr_str_or_json() -> None:
    s = Settings(
        kafka=KafkaSettings(sasl_username="alertfeed", sasl_password=SecretStr("kafka-s3cret")),
        redis=RedisSettings(password=SecretStr("redis-s3cret")),
    )
    for shown in (repr(s), str(s), repr(s.kafka), repr(s.redis), s.model_dump_json()):
        assert "kafka-s3cret" not in shown and "redis-s3cret" not in shown
    # ... while the clients that need them still get them.
    assert s.kafka.confluent_config()["sasl.password"] == "kafka-s3cret"
    assert s.redis.resolved_password() == "redis-s3cret"


def test_a_password_from_the_environment_is_a_secret_too() -> None:
    s = settings_from(
        {"ALERTFEED_KAFKA__SASL_PASSWORD": "env-s3cret", "ALERTFEED_REDIS__PASSWORD": "env-r3dis"}
    )
    assert "env-s3cret" not in repr(s) and "env-r3dis" not in repr(s)
    assert s.kafka.confluent_config()["sasl.password"] == "env-s3cret"


# -- the environment of a worker process ---------------------------------------------------
def unusual_settings(tmp_path: Path) -> Settings:
    """Every section away from its defaults, with values that are easy to mangle on the
    way through the environment: separators, quotes, non-ASCII, JSON-looking text."""
    return Settings(
        app_id='feed "eu" 2',
        kafka=KafkaSettings(
            url="kafka://b1:9093,b2:9094",
            client_id="alertfeed-eu",
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username="user,with,commas",
            sasl_password=SecretStr('pa$$ w0rd="x"'),
            session_timeout_s=12.5,
        ),
        redis=RedisSettings(
            url="rediss://cache.internal:6390/4",
            password=SecretStr("r3dis"),
            key_prefix="af-eu",
            socket_timeout_s=2.5,
            cluster=True,
        ),
        topics=TopicSettings(alerts="eu.alerts", dlq="eu.dlq", partitions=12, replication_factor=3),
        match=MatchSettings(
            resolution=8,
            batch_size=250,
            freshness_s=600.5,
            cover_cache_dir=tmp_path / "covers dir",
            cover_cache_mb=0,
        ),
        policy=PolicySettings(
            allowed_senders=["amber@ncmec.org", "sécurité@quebec.example"],
            test_users=['qa "1"', "[not json]"],
        ),
        metrics=MetricsSettings(host="127.0.0.1", port=9200),
        data_dir=str(tmp_path / "data"),
        log_level="DEBUG",
    )


def test_a_worker_given_the_child_environment_builds_equal_settings(tmp_path: Path) -> None:
    original = unusual_settings(tmp_path)
    rebuilt = settings_from(child_environment(original))
    assert rebuilt == original
    assert rebuilt.kafka.confluent_config() == original.kafka.confluent_config()
    assert rebuilt.redis.resolved_password() == "r3dis"


def test_default_settings_survive_the_child_environment_too() -> None:
    assert settings_from(child_environment(Settings())) == Settings()


def test_stale_alertfeed_variables_of_the_parent_do_not_reach_the_worker(tmp_path: Path) -> None:
    original = unusual_settings(tmp_path).model_copy(
        update={"kafka": KafkaSettings(url="kafka://b1:9093")}  # no SASL at all
    )
    stale = {
        "ALERTFEED_KAFKA__SASL_USERNAME": "stale-user",
        "ALERTFEED_KAFKA__SASL_PASSWORD": "stale-password",
        "ALERTFEED_SOMETHING_OLD": "1",
    }
    kind, environment = in_child(stale, "environment", original)
    assert kind == "environment"
    assert not set(stale) & set(environment)
    assert settings_from(environment) == original


# -- refusing settings that cannot work -----------------------------------------------------
@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ALERTFEED_MATCH__RESOLUTION": "16"}, "resolution"),
        ({"ALERTFEED_KAFKA__URL": "redis://cache:6379"}, "Kafka URL"),
        ({"ALERTFEED_REDIS__URL": "http://cache:6379"}, "Redis URL"),
        # pydantic-settings names the section of a list that is not JSON, not the list.
        ({"ALERTFEED_POLICY__ALLOWED_SENDERS": "amber@ncmec.org"}, "policy"),
        ({"ALERTFEED_LOG_LEVEL": "VERBOSE"}, "log_level"),
        ({"ALERTFEED_KAFKA__SESSION_TIMEOUT_S": "1"}, "session_timeout_s"),
        ({"ALERTFEED_TOPICS__PARTITIONS": "zero"}, "partitions"),
    ],
)
def test_settings_that_cannot_work_raise_a_configuration_error_naming_the_setting(
    environ: dict[str, str], named: str
) -> None:
    message = error_from(environ)
    assert message.startswith("invalid settings")
    assert named in message


def test_explicit_overrides_are_checked_like_the_environment() -> None:
    with pytest.raises(ConfigurationError, match="resolution"):
        load_settings(match={"resolution": 99})

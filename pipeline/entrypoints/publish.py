"""``alertfeed publish``: put alert files or location JSON lines on their topics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from pipeline.adapters.kafka_tools import DeliveryProducer
from pipeline.domain.formats import parse_alert_message
from pipeline.domain.ingest import original_of
from pipeline.settings import Settings


def alert_message_key(data: bytes) -> bytes:
    """Kafka key of an alert message: the identifier of the alert as first issued, so the
    compacted alerts topic keeps the latest message of every alert. Raises BadInput."""
    alert = parse_alert_message(data)[0]
    return original_of(alert)[1].encode()


def publish_files(settings: Settings, topic: str, files: Sequence[str]) -> int:
    producer = DeliveryProducer(settings)
    real = getattr(settings.topics, topic)
    for name in files:
        data = Path(name).read_bytes()
        if topic == "alerts":
            producer.send(real, data, key=alert_message_key(data))
            continue
        for line in data.splitlines():
            if line.strip():
                event = orjson.loads(line)
                producer.send(real, line, key=str(event.get("user_id", "")).encode())
    return producer.flush()

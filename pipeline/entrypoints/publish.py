"""``alertfeed publish alerts|locations FILE...``: put alert files or location JSON lines on
their topics.

All or nothing: every file is read and validated before the producer is even created, so
one malformed file among several publishes nothing. The first such file ends the command
with one line naming it (and the line, for locations) and the reason, exit status 1.

What is validated is what the worker would reject whatever its state:

* ``alerts``: one message per file, parsed as the worker parses it (CAP XML, NWS GeoJSON
  or alert JSON), holding at least one alert, and every Alert or Update with some area (a
  polygon, a circle or a geocode). Whether its geocodes resolve, its cover fits the
  limits or its sender is allowed is the worker's to decide, and dead-letter.
* ``locations``: one message per line that is not blank, each checked by the worker's own
  :func:`~pipeline.domain.targeting.locations.parse_location`: a JSON object, ``user_id`` a
  non-empty string, ``lat``/``lon`` finite and in range, ``ts`` integer epoch ms,
  ``accuracy_m`` finite and not negative. Only the shape: the worker's rule that ``ts`` is
  not too far ahead of its clock is judged against its clock when it consumes the event,
  which publishing cannot know (recorded or scripted times are legitimate here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pipeline.adapters.kafka.tools import DeliveryProducer
from pipeline.domain.alerts.formats import parse_alert_message
from pipeline.domain.lifecycle import original_of
from pipeline.domain.targeting.locations import parse_location
from pipeline.entrypoints.input_files import parse_file, parse_lines
from pipeline.errors import MalformedEvent, UnsupportedArea
from pipeline.settings import Settings

Topic = Literal["alerts", "locations"]
# (key, value) of one Kafka record.
KafkaRecord = tuple[bytes, bytes]

# A clock at the end of time: parse_location's future-ts rule then never applies.
_NO_CLOCK_MS = 2**63 - 1


def alert_record(data: bytes) -> KafkaRecord:
    """The record for one alert message: keyed by the identifier of the alert as first
    issued, so the compacted alerts topic keeps the latest message of every alert; the
    value is ``data`` untouched. Raises BadInput (see the module docstring)."""
    alerts = parse_alert_message(data)
    if not alerts:
        raise MalformedEvent("holds no alert (an empty FeatureCollection or feed)")
    for alert in alerts:
        has_area = any(a.polygons or a.circles or a.geocodes for a in alert.areas)
        if alert.msg_type in ("Alert", "Update") and not has_area:
            raise UnsupportedArea(
                f"{alert.msg_type} {alert.identifier!r} has no area: no polygon, circle or geocode"
            )
    return original_of(alerts[0])[1].encode(), data


def location_record(line: bytes) -> KafkaRecord:
    """The record for one location line, keyed by its user id; the value is ``line``
    untouched. Raises MalformedEvent for a line the worker would dead-letter whatever its
    clock (see the module docstring)."""
    location = parse_location(line, now_ms=_NO_CLOCK_MS, max_future_skew_ms=0)
    return location.user_id.encode(), line


def read_records(topic: Topic, files: Sequence[str]) -> list[KafkaRecord]:
    """Every record the files hold, in order. Raises InputFileError for the first file (or
    line) that is unreadable or malformed."""
    if topic == "alerts":
        return [parse_file(name, alert_record) for name in files]
    return [record for name in files for record in parse_lines(name, location_record)]


def publish_files(settings: Settings, topic: Topic, files: Sequence[str]) -> int:
    """Publish the files' records; returns how many the broker acknowledged.

    Raises InputFileError, before connecting to Kafka, if any file is malformed (nothing
    is published then), and BrokerUnavailable if any record was not delivered.
    """
    records = read_records(topic, files)
    producer = DeliveryProducer(settings)
    real = getattr(settings.topics, topic)
    for key, value in records:
        producer.send(real, value, key=key)
    return producer.flush()

"""One Kafka record as it came off a topic: the shape every consumer of ours hands on.

The worker's agents, the alert-log reader of an index rebuild, the recorder and the tests'
collectors all turn what they consume into a :class:`RawEvent` (the Kafka adapters do it
in one function, ``pipeline.adapters.kafka.consumer.consumed_record``). The other record
shapes are each for one purpose: ``RawLocations`` (``pipeline.domain.targeting.locations``)
is a batch of them held as columns, ``LoggedRecord`` (``pipeline.replay.eventlog``) is a
line of an event log.
"""

from __future__ import annotations

from dataclasses import dataclass

# A record's headers in their order, names repeating as they may; a value may be null.
Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One record as consumed: bytes untouched, plus its coordinates in the log."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

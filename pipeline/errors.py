"""The one error root of alertfeed, and its two families.

    AlertfeedError
    ├── BadInput                 a poison message: dead-lettered, counted, processing goes on
    │   ├── MalformedEvent       bytes that do not parse or validate (JSON, XML, schema)
    │   ├── UnsupportedArea      an area that cannot be resolved to geometry
    │   ├── GuardrailExceeded    an alert over a configured limit (vertices, areas, cells)
    │   └── PolicyRejected       valid, but not allowed (unknown sender, ...)
    ├── InfrastructureError      Kafka or Redis unavailable: retried with backoff, never dropped
    │   ├── IndexUnavailable     the cell index (Redis) failed
    │   │   └── IndexNotBuilt    the index lost its contents: rebuild from the alerts topic
    │   └── BrokerUnavailable    the Kafka broker failed
    └── ConfigurationError       settings that cannot work; raised at start-up

Adapters translate library errors into these with ``raise ... from exc``; nothing outside
an adapter catches a library's own exception types.
"""

from __future__ import annotations

from typing import Literal

ReasonClass = Literal["malformed", "unsupported_area", "guardrail", "policy"]


class AlertfeedError(Exception):
    """Root of every error alertfeed raises on purpose."""


class BadInput(AlertfeedError):
    """One input event is unusable. The caller dead-letters it and keeps going.

    ``reason_class`` is a low-cardinality label for metrics; ``str(error)`` is the precise,
    human-readable reason that goes onto the dead-letter record.
    """

    reason_class: ReasonClass = "malformed"


class MalformedEvent(BadInput):
    reason_class: ReasonClass = "malformed"


class UnsupportedArea(BadInput):
    reason_class: ReasonClass = "unsupported_area"


class GuardrailExceeded(BadInput):
    reason_class: ReasonClass = "guardrail"


class PolicyRejected(BadInput):
    reason_class: ReasonClass = "policy"


class InfrastructureError(AlertfeedError):
    """A dependency is down or misbehaving. Retry with backoff; never drop the input."""


class IndexUnavailable(InfrastructureError):
    pass


class IndexNotBuilt(IndexUnavailable):
    """The index store is empty or was flushed; matching waits for a rebuild."""


class BrokerUnavailable(InfrastructureError):
    pass


class ConfigurationError(AlertfeedError):
    pass

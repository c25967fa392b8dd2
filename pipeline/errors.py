"""The one error root of alertfeed, and its two families.

    AlertfeedError
    ├── BadInput                 a poison message: dead-lettered, counted, processing goes on
    │   ├── MalformedEvent       bytes that do not parse or validate (JSON, XML, schema)
    │   ├── UnsupportedArea      an area that cannot be resolved to geometry
    │   ├── GuardrailExceeded    an alert over a configured limit (vertices, areas, cells)
    │   ├── PolicyRejected       valid, but not allowed (unknown sender, ...)
    │   └── InternalFailure      handling this one message raised an unexpected exception
    ├── InfrastructureError      Kafka or Redis unavailable: retried with backoff, never dropped
    │   ├── IndexUnavailable     the cell index (Redis) failed
    │   │   └── IndexNotBuilt    the index lost its contents: rebuild from the alerts topic
    │   └── BrokerUnavailable    the Kafka broker failed
    ├── ConfigurationError       settings that cannot work; raised at start-up
    └── InputFileError           a file named on the command line that cannot be read or
                                 parsed; the CLI names it and the reason, and exits 1

Adapters translate library errors into these with ``raise ... from exc``; nothing outside
an adapter catches a library's own exception types.

Only real Kafka and Redis failures are infrastructure. Any other exception while one
message is handled (a codec lookup, a recursion limit, a third-party parser's surprise) is
dead-lettered as :class:`InternalFailure`, so one message can never take others with it;
an exception outside that per-message handling crashes the worker process, whose
partitions are then redelivered (see ``pipeline.adapters.faust.app``).
"""

from __future__ import annotations

from typing import Literal

ReasonClass = Literal["malformed", "unsupported_area", "guardrail", "policy", "internal"]


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


class InternalFailure(BadInput):
    """Handling one message raised an exception that is none of ours: most likely a bug
    that this message triggers. The message is dead-lettered with the exception's type and
    text, like any bad input, and the rest of its batch goes on."""

    reason_class: ReasonClass = "internal"

    @classmethod
    def of(cls, exc: BaseException) -> InternalFailure:
        text = str(exc)
        return cls(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


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


def excerpt(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a reason quotes the input it rejects
    through this, so that a dead-letter reason never carries a payload."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class InputFileError(AlertfeedError):
    """A file given to a command (``publish``, ``expand``) is unreadable or malformed.

    ``str(error)`` is one line: the file (and line, for JSON lines), then the reason.
    """

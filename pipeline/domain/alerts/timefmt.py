"""ISO-8601 <-> epoch milliseconds, the only place that converts between them."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.errors import MalformedEvent, excerpt


def iso_to_ms(value: str, what: str) -> int:
    """Parse an ISO-8601 timestamp with an offset (``Z`` or ``±hh:mm``) to epoch ms.

    Raises MalformedEvent naming ``what`` when the text is not a timestamp or has no offset:
    a naive time is ambiguous by up to a day, too much for an emergency alert.
    """
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise MalformedEvent(f"{what} {excerpt(value)} is not an ISO-8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise MalformedEvent(f"{what} {excerpt(value)} has no UTC offset")
    return int(parsed.timestamp() * 1000)


def ms_to_iso(ms: int) -> str:
    """Epoch ms to ``YYYY-MM-DDThh:mm:ss[.fff]Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

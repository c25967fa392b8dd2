"""The dead-letter record of a raw event (:class:`~pipeline.domain.records.RawEvent`) that
was bad.

A dead letter keeps the original bytes exactly (base64), where they came from (topic,
partition, offset) and a precise reason, so nothing a producer sent is ever lost.
"""

from __future__ import annotations

import base64
from typing import Any

from pipeline.domain.records import RawEvent
from pipeline.errors import BadInput

DEAD_LETTER_SCHEMA = "alertfeed.dead_letter/1"


def dead_letter(
    raw: RawEvent, error: BadInput, *, logical_topic: str, now_ms: int
) -> dict[str, Any]:
    """The dead-letter record (``schemas/dead_letter.schema.json``) for ``raw``."""
    return {
        "schema": DEAD_LETTER_SCHEMA,
        "source": {
            "topic": raw.topic,
            "logical_topic": logical_topic,
            "partition": raw.partition,
            "offset": raw.offset,
            "timestamp_ms": raw.timestamp_ms,
        },
        "reason": str(error),
        "reason_class": error.reason_class,
        "key_b64": base64.b64encode(raw.key).decode("ascii") if raw.key is not None else None,
        "value_b64": base64.b64encode(raw.value).decode("ascii") if raw.value is not None else None,
        "dead_lettered_ms": now_ms,
    }

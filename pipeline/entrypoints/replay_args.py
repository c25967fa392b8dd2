"""Command-line values of the log tools (``record``, ``replay``, ``simulate``): times,
durations and topic renames. Each parser raises ValueError with a message for the user."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?)?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_topic_map(pairs: Iterable[str]) -> dict[str, str]:
    """``["old=new", ...]`` into a mapping. Raises ValueError on an entry without ``=``."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"topic map entry {pair!r} is not old=new")
        mapping[old] = new
    return mapping


def parse_duration_ms(text: str) -> int:
    """``90``, ``90s``, ``10m``, ``1.5h``, ``2d`` or ``250ms`` (bare numbers are seconds) to
    milliseconds. Raises ValueError."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration (e.g. 90s, 10m, 1h): {text!r}")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])


def parse_when(text: str, now_ms: int) -> int:
    """A point in time as epoch ms: ``now``, ``now-10m``, ``now+30s``, an ISO-8601 time with
    an offset, or epoch milliseconds. Raises ValueError."""
    stripped = text.strip()
    match = _RELATIVE.match(stripped)
    if match:
        sign, amount, unit = match.groups()
        if sign is None:
            return now_ms
        delta = parse_duration_ms(f"{amount}{unit or 's'}")
        return now_ms + delta if sign == "+" else now_ms - delta
    if stripped.isdigit():
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"not a time (now, now-10m, ISO-8601, epoch ms): {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return int(moment.timestamp() * 1000)

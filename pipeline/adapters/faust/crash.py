"""Crash-only: how the worker ends on a bug, before Faust could restart anything in place.

The runtime contains every failure of one message (dead letter) and retries every
infrastructure failure. Anything that still escapes an agent, a timer or the location
join is a bug outside any one message, and :func:`crash` ends the process at once, before
Faust's supervisor could restart the agent in place over the batch it was handling (the
restarted agent would ack later offsets, and their commit would skip that batch). Nothing
more is committed; the partitions go to the restarted worker or a peer, which handles the
batch again.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import NoReturn

log = logging.getLogger(__name__)
EXIT_CRASHED = 70  # EX_SOFTWARE: the supervisor (k8s, systemd, a test) restarts the worker


def crash(where: str, exc: BaseException) -> NoReturn:
    """End the worker process now, committing nothing more (see the module docstring).

    The log line names the exception's type and where it was raised, not its text: that
    may quote a user id or coordinates."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.critical(
        "worker crashed, exiting without committing where=%s error_type=%s\n%s",
        where,
        type(exc).__name__,
        frames,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CRASHED)


def crash_only(where: str, step: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``step`` for a Faust timer, ending the process on any exception it lets through."""

    async def run() -> None:
        try:
            await step()
        except Exception as exc:
            crash(where, exc)

    return run

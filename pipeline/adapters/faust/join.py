"""The location join as a service of the Faust app: batches from librdkafka, not Faust events.

Faust's per-message path (tasks, a lock, an Event and a loop turn per message) costs more
than matching a location does, and no setting removes it. So the worker's Faust app keeps
what Faust is good at here (the alerts agent, the timers, the web views, the start and
stop of everything) and this :class:`mode.Service`, started and stopped with the app, owns
the locations topic through a :class:`~pipeline.adapters.kafka.batches.BatchConsumer`: one
``consume()`` call, one batch, one call of the runtime's ``on_locations``.

The locations are consumed in a consumer group of their own, ``<app id>.locations``:
Faust's group (the app id) speaks Faust's own assignment protocol, which a librdkafka
member cannot join, and the two topics need no co-partitioning (the alerts reach every
worker through the replicated index).

Crash-only, as the agents: anything the runtime lets through ends the process at once
(:func:`~pipeline.adapters.faust.crash.crash`), committing nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import faust
from mode import Service

from pipeline.adapters.faust.crash import crash
from pipeline.adapters.kafka.batches import BatchConsumer
from pipeline.service.runtime import WorkerRuntime
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def locations_group(settings: Settings) -> str:
    """The consumer group of the locations topic."""
    return f"{settings.app_id}.locations"


def add_location_join(
    app: faust.App,
    settings: Settings,
    runtime: WorkerRuntime,
    on_assigned: Callable[[frozenset[int]], None],
) -> BatchConsumer:
    """Register the service that feeds ``runtime`` the locations topic, batch by batch;
    ``on_assigned`` hears of each new set of owned partitions. Returns its consumer."""
    match = settings.match
    drain_s = settings.kafka.session_timeout_s * 3
    consumer = BatchConsumer(
        settings,
        topic=settings.topics.locations,
        group_id=locations_group(settings),
        handle=runtime.on_locations,
        on_assigned=on_assigned,
        batch_size=match.batch_size,
        batch_within_s=match.batch_within_s,
        in_flight=match.batches_in_flight,
        drain_timeout_s=drain_s,
    )

    @app.service
    class LocationJoin(Service):
        """Runs the consumer's loop from the app's start to its stop."""

        _running: asyncio.Future[None] | None = None

        async def on_start(self) -> None:
            self._running = asyncio.ensure_future(self._run())

        async def _run(self) -> None:
            try:
                await consumer.run()
            except Exception as exc:
                crash("location join", exc)

        async def on_stop(self) -> None:
            consumer.stop()  # leaves the group: the batches in hand finish and commit
            if not await consumer.join(drain_s + 5):
                log.warning("location consumer still busy at stop; its batches go uncommitted")
            if self._running is not None and not self._running.done():
                self._running.cancel()

    return consumer

"""Several real worker processes under a harness that restarts whichever dies, and the
consumer group's progress as the broker records it.

A worker can die two ways here: the test SIGKILLs it (:meth:`Fleet.kill`), or it exits by
itself (the worker is crash-only: an unexpected exception ends the process and its
partitions are redelivered). :meth:`Fleet.supervise` restarts both kinds, as Kubernetes
would, and keeps count of each.

:class:`GroupProgress` answers "has the group processed everything published so far?":
the committed offset of every partition of the consumed topics equals its end. Workers
commit a batch only after its cards were acknowledged by the broker, so a drained group
has produced every card it ever will for the locations so far (an alert's presence
fan-out runs on each worker's task of its own, and is recorded finished per partition:
see tests/support/chaos.py).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.adapters.faust.join import locations_group
from pipeline.settings import Settings
from tests.support.worker import WorkerProcess

T = TypeVar("T")
KILLED = -9  # Popen.returncode of a process ended by SIGKILL


@dataclass
class Slot:
    """One worker position: its current process and what became of the earlier ones."""

    index: int
    process: WorkerProcess
    incarnation: int = 0
    killed: int = 0
    # Return codes of the exits the harness did not cause (-9 also for a start that hung).
    exits: list[int] = field(default_factory=list)


class Fleet:
    """``size`` workers; ``settings_for(slot, incarnation)`` gives each process its settings
    (a fresh metrics port per incarnation, so a restart never waits for a port)."""

    def __init__(
        self,
        settings_for: Callable[[int, int], Settings],
        log_dir: Path,
        size: int,
        *,
        start_timeout_s: float = 120.0,
        max_failed_starts: int = 5,
    ) -> None:
        self._settings_for = settings_for
        self._log_dir = log_dir
        self._start_timeout_s = start_timeout_s
        self._max_failed_starts = max_failed_starts
        self.failed_starts = 0
        self.slots = [Slot(i, self._process(i, 0)) for i in range(size)]

    def _process(self, index: int, incarnation: int) -> WorkerProcess:
        return WorkerProcess(
            self._settings_for(index, incarnation),
            self._log_dir / f"worker-{index}.log",  # appended to by every incarnation
        )

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: Slot) -> None:
        """Start the slot's process; a process that dies or hangs while starting counts as
        an exit and is tried again on the next :meth:`supervise`, up to a limit."""
        try:
            slot.process.start(self._start_timeout_s)
        except RuntimeError:
            slot.process.kill()
            code = slot.process.proc.returncode if slot.process.proc else None
            slot.exits.append(code if code is not None else KILLED)
            self.failed_starts += 1
            if self.failed_starts > self._max_failed_starts:
                raise
            self._replace(slot)

    def _replace(self, slot: Slot) -> None:
        slot.incarnation += 1
        slot.process = self._process(slot.index, slot.incarnation)

    def kill(self, index: int) -> None:
        """SIGKILL the slot's worker now; :meth:`supervise` starts its replacement."""
        slot = self.slots[index]
        self._record_exit(slot)
        if slot.process.running():
            slot.process.kill()
            slot.killed += 1
        self._replace(slot)

    def _record_exit(self, slot: Slot) -> None:
        proc = slot.process.proc
        if proc is not None and proc.poll() is not None:
            slot.exits.append(proc.returncode)
            slot.process.kill()  # closes its log, cleans up its process group

    def supervise(self) -> None:
        """Restart every worker that is not running: killed, or exited by itself."""
        for slot in self.slots:
            if slot.process.proc is not None and slot.process.proc.poll() is not None:
                self._record_exit(slot)
                self._replace(slot)
            if slot.process.proc is None:
                self._start(slot)

    def ready(self) -> bool:
        """Every worker running and holding partitions (its /ready says so)."""
        return all(_is_ready(slot.process) for slot in self.slots)

    def stop(self) -> None:
        for slot in self.slots:
            if slot.process.proc is not None:
                if slot.process.proc.poll() is not None:
                    self._record_exit(slot)
                else:
                    slot.process.stop()

    @property
    def kills(self) -> int:
        return sum(slot.killed for slot in self.slots)

    @property
    def self_exits(self) -> list[tuple[int, int]]:
        """(slot, return code) of every exit the harness did not cause."""
        return [(slot.index, code) for slot in self.slots for code in slot.exits]

    def log_tails(self, size: int = 1500) -> str:
        return "\n".join(
            f"--- worker {slot.index} (incarnation {slot.incarnation}) ---\n"
            + slot.process.log_tail(size)
            for slot in self.slots
        )

    def wait(self, what: str, check: Callable[[], T | None], *, timeout_s: float = 120.0) -> T:
        """Poll ``check()`` (supervising the workers meanwhile) until it gives something
        other than None or False; AssertionError naming ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause = 0.02
        while True:
            self.supervise()
            outcome = check()
            if outcome is not None and outcome is not False:
                return outcome
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not reached within {timeout_s:.0f}s "
                    f"(self-exits {self.self_exits})\n{self.log_tails()}"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.3)


def _is_ready(worker: WorkerProcess) -> bool:
    if not worker.running():
        return False
    try:
        with urllib.request.urlopen(f"{worker.base_url}/ready", timeout=2) as resp:
            return bool(json.load(resp).get("ready"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


class GroupProgress:
    """The committed offsets of the workers' consumer groups against the ends of the logs
    of ``topics``, read from the broker (it does not join the groups): Faust's group (the
    app id) for the alerts, the location join's own group for the locations."""

    def __init__(
        self, settings: Settings, topics: Sequence[str], logger: logging.Logger | None = None
    ) -> None:
        def consumer(group: str) -> Consumer:
            return Consumer(
                {
                    **settings.kafka.confluent_config(),
                    "group.id": group,
                    "enable.auto.commit": False,
                    "logger": logger or logging.getLogger(__name__),
                }
            )

        joined = locations_group(settings)
        self._consumers = {settings.app_id: consumer(settings.app_id), joined: consumer(joined)}
        self._partitions: dict[str, list[TopicPartition]] = {}
        for topic in topics:
            group = joined if topic == settings.topics.locations else settings.app_id
            self._partitions.setdefault(group, []).extend(
                TopicPartition(topic, p) for p in range(settings.topics.partitions)
            )

    def lag(self) -> int | None:
        """Records published but not yet committed by the groups; None while the broker
        cannot say (it is restarting, say)."""
        try:
            behind = 0
            for group, partitions in self._partitions.items():
                consumer = self._consumers[group]
                for tp in consumer.committed(partitions, timeout=5):
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition), timeout=5, cached=False
                    )
                    behind += max(0, high - (tp.offset if tp.offset >= 0 else low))
            return behind
        except KafkaException:
            return None

    def drained(self) -> bool:
        return self.lag() == 0

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()

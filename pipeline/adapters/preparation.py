"""Alert preparation (parse, admit, cover) in a child process, under a CPU budget.

An alert's geometry can cost seconds to minutes of CPU: a polygon from -89,-179.9 to
89,179.9 takes over 20 s to cover at resolution 10, inside h3 and shapely's C code. In the
worker's own process that would hold the interpreter while locations wait. Here every
alerts-topic message is prepared in one long-lived child process instead, and may use at
most ``cpu_budget_s`` seconds of CPU there: the child's soft ``RLIMIT_CPU`` is set before
each message, so the kernel ends it with SIGXCPU even in the middle of C code, and the
message is rejected as a guardrail (:class:`~pipeline.errors.GuardrailExceeded`). A child
that does not answer within ``wall_budget_s`` (on a starved machine) is killed for the same
reason. The next message gets a new child.

How a child's end maps onto the error tree:

* SIGXCPU, or no answer within the wall budget: ``GuardrailExceeded`` (the message's cost).
* SIGTERM, SIGINT, SIGHUP: someone stops the process tree (a worker shutting down);
  :class:`PreparationInterrupted`, an infrastructure error, so the message is retried and
  never dead-lettered for it.
* Any other death (SIGSEGV in a C extension, the kernel's OOM killer, an exit):
  :class:`~pipeline.errors.InternalFailure`: this message crashed the parser.

The child is started with ``spawn`` (the worker has librdkafka and event-loop threads,
which ``fork`` would copy half-way), builds its preparer once from a picklable factory and
its argument (the settings), and exits when the worker closes the pipe or dies.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import resource
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Generic, TypeVar

from pipeline.domain.lifecycle import PreparedAlert
from pipeline.errors import BadInput, GuardrailExceeded, InfrastructureError, InternalFailure

log = logging.getLogger(__name__)

C = TypeVar("C")
Preparer = Callable[[bytes], list[PreparedAlert]]
_STOPPED_BY = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


class PreparationInterrupted(InfrastructureError):
    """The preparation process was stopped from outside (shutdown): retry the message."""


class PreparationProcess(Generic[C]):
    """``await prepare(data)`` runs ``factory(config)(data)`` in the child process.

    One message at a time (callers are serialised). Raises what the preparer raised (a
    :class:`BadInput`), ``InternalFailure`` for any other exception there, and the errors
    the module docstring lists for a child that ended.
    """

    def __init__(
        self,
        factory: Callable[[C], Preparer],
        config: C,
        *,
        cpu_budget_s: float,
        wall_budget_s: float,
        start_timeout_s: float = 120.0,
    ) -> None:
        self._factory = factory
        self._config = config
        self._cpu_budget_s = cpu_budget_s
        self._wall_budget_s = wall_budget_s
        self._start_timeout_s = start_timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._serial = threading.Lock()
        self._async_serial = asyncio.Lock()

    def start(self) -> None:
        """Start the child now (blocking, about a second) instead of at the first message."""
        with self._serial:
            self._ensure_started()

    async def prepare(self, data: bytes) -> list[PreparedAlert]:
        async with self._async_serial:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self.prepare_blocking, data)

    def prepare_blocking(self, data: bytes) -> list[PreparedAlert]:
        with self._serial:
            conn = self._ensure_started()
            conn.send_bytes(data)
            deadline = time.monotonic() + self._wall_budget_s
            while not conn.poll(0.2):
                process = self._process
                if process is None or not process.is_alive() or time.monotonic() > deadline:
                    raise self._ended(timed_out=time.monotonic() > deadline)
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                raise self._ended(timed_out=False) from None
        if kind == "ok":
            result: list[PreparedAlert] = payload
            return result
        raise payload  # a BadInput (InternalFailure included) made in the child

    def close(self) -> None:
        with self._serial:
            self._stop()

    # -- the child's life ----------------------------------------------------------------
    def _ensure_started(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            return self._conn
        self._stop()
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve,
            args=(theirs, self._factory, self._config, self._cpu_budget_s),
            name="alertfeed-prepare",
            daemon=True,
        )
        process.start()
        theirs.close()
        if not ours.poll(self._start_timeout_s):
            process.kill()
            raise PreparationInterrupted("the alert preparation process did not start")
        try:
            ours.recv()  # ("ready", None)
        except (EOFError, OSError) as exc:
            raise PreparationInterrupted(
                f"the alert preparation process exited at start (exit code {process.exitcode})"
            ) from exc
        self._process, self._conn = process, ours
        log.info("alert preparation process started cpu_budget_s=%g", self._cpu_budget_s)
        return ours

    def _ended(self, *, timed_out: bool) -> BadInput | InfrastructureError:
        """The error for the message in flight when the child ended (or was ended)."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
        if process is not None:
            process.join(5)
        code = process.exitcode if process is not None else None
        self._stop()
        if timed_out:
            return GuardrailExceeded(
                f"preparing the alert took longer than {self._wall_budget_s:g}s (wall clock)"
            )
        if code == -signal.SIGXCPU:
            return GuardrailExceeded(
                f"preparing the alert exceeded its CPU budget of {self._cpu_budget_s:g}s"
            )
        if code is not None and code < 0 and -code in _STOPPED_BY:
            return PreparationInterrupted(
                f"the alert preparation process was stopped by {signal.Signals(-code).name}"
            )
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else code
        return InternalFailure(f"the alert preparation process died on this message ({how})")

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
        self._process, self._conn = None, None


def _serve(
    conn: Connection, factory: Callable[[Any], Preparer], config: Any, budget: float
) -> None:
    """The child: prepare each message received, reply ``(kind, payload)``, until EOF."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU must not write a core file
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    prepare = factory(config)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    conn.send(("ready", None))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the worker closed the pipe or died
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + budget)
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))
        reply: tuple[str, Any]
        try:
            reply = ("ok", prepare(data))
        except BadInput as exc:
            reply = ("bad", exc)
        except Exception as exc:  # any surprise is this message's, never the worker's
            reply = ("bad", InternalFailure.of(exc))
        finally:
            resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        try:
            conn.send(reply)
        except Exception as exc:  # a reply that does not pickle
            conn.send(("bad", InternalFailure.of(exc)))

"""Embedded workers: N long-lived child processes fed by an in-process broker.

This is the embedded default's stand-in for "RabbitMQ plus ``delivery worker``
pods". Each slot is a thread in the serving process that takes a task from the
broker and hands it to its own child process over a pipe. The child runs the
very same :class:`~transformers.worker.Worker`; its reporter talks back over the
pipe, so only the parent touches the request store. If a child dies mid-file,
the slot raises, the broker puts the task back (its delivery limit ends in the
dead-letter queue), and the slot starts a fresh child for the next task.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from delivery.broker.base import Broker, Verdict
from delivery.config import Settings
from delivery.errors import TransientError
from delivery.logs import current_format
from delivery.messages import FileReport, FileTask
from delivery.policy import SourcePolicy
from transformers.activity import Activity, Heartbeat, worker_name
from transformers.isolate import Limits

__all__ = ["ProcessPool", "WorkerDied", "ChildSpec"]

log = logging.getLogger("delivery.pool")


class WorkerDied(RuntimeError):
    pass


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs to build its Worker; must pickle."""

    settings: Settings  # the child opens its own result store from these
    policy: SourcePolicy
    log_format: str | None = field(default_factory=current_format)  # the parent's


class _PipeReporter:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _ask(self, message: tuple[str, Any]) -> Any:
        self.conn.send(message)
        ok, value = self.conn.recv()
        if not ok:  # the serving process could not do it (its store is down, say)
            raise TransientError(value)
        return value

    def record(self, report: FileReport) -> None:
        self._ask(("record", report))

    def pending(self, request_id: str, file_id: int) -> bool:
        return bool(self._ask(("pending", (request_id, file_id))))


def _child_main(conn: Connection, spec: ChildSpec) -> None:
    import signal

    from delivery.logs import setup_logging
    from delivery.objects import open_store
    from transformers.activity import TrackedWorker

    # Ctrl-C reaches the whole process group; the parent decides when children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.log_format is not None:
        setup_logging(spec.log_format)
    # Tracked for the log ids only: the parent's slot keeps this child's activity.
    worker = TrackedWorker(open_store(spec.settings), _PipeReporter(conn), spec.policy,
                           limits=Limits.from_settings(spec.settings))
    while True:
        message = conn.recv()
        if message is None:
            return
        task, attempts = message
        conn.send(("verdict", worker.handle(task, attempts).value))


class _Slot:
    def __init__(self, pool: ProcessPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: Any = None
        self.conn: Connection | None = None
        self.activity = Activity(worker_name(f"slot-{index}"), kind="embedded")
        self.activity.pid = None  # the child's, once started

    def _ensure_child(self) -> Connection:
        if self.process is None or not self.process.is_alive():
            parent, child = mp.get_context("spawn").Pipe()
            self.process = mp.get_context("spawn").Process(
                target=_child_main, args=(child, self.pool.spec), daemon=True,
                name=f"delivery-worker-{self.index}")
            self.process.start()
            self.activity.pid = self.process.pid
            child.close()
            self.conn = parent
        assert self.conn is not None
        return self.conn

    def handle(self, task: FileTask, attempts: int) -> Verdict:
        self.activity.begin(task)
        try:
            return self._handle(task, attempts)
        finally:
            self.activity.end()

    def _handle(self, task: FileTask, attempts: int) -> Verdict:
        conn = self._ensure_child()
        conn.send((task, attempts))
        while True:
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                code = self.process.exitcode if self.process else None
                self.process = None
                died = (f"worker process died (exit code {code}) on file "
                        f"{task.file_id} of {task.request_id}")
                self.activity.error(died, task.request_id)
                raise WorkerDied(died) from None
            if kind == "verdict":
                return Verdict(value)
            # Every question of the child gets exactly one answer, errors included:
            # otherwise the next task would be read as the answer and acked undone.
            try:
                if kind == "record":
                    self.pool.reporter.record(value)
                    self.activity.recorded(value)
                    answer: Any = None
                else:
                    answer = self.pool.reporter.pending(*value)
            except Exception as err:  # noqa: BLE001 - told to the child, which retries
                conn.send((False, f"{type(err).__name__}: {err}"))
                continue
            conn.send((True, answer))

    def stop(self) -> None:
        if self.conn is not None and self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.kill()


class ProcessPool:
    """``heartbeat``, if given, receives each slot's activity snapshot (see
    :mod:`transformers.activity`): on every change and every few seconds."""

    def __init__(self, broker: Broker, reporter: Any, spec: ChildSpec, workers: int,
                 heartbeat: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.broker = broker
        self.reporter = reporter
        self.spec = spec
        self.slots = [_Slot(self, i) for i in range(workers)]
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.heartbeat = (Heartbeat([s.activity for s in self.slots], heartbeat)
                          if heartbeat is not None else None)

    def start(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.start()
        for slot in self.slots:
            thread = threading.Thread(target=self.broker.consume,
                                      args=(slot.handle, self.stop_event),
                                      name=f"delivery-slot-{slot.index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None]

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        for thread in self.threads:
            thread.join(timeout=timeout)
        for slot in self.slots:
            slot.stop()

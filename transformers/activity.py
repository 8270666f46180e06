"""What a worker is doing, and the heartbeats that tell the API.

- :class:`Activity`: one worker's state: the file it is on, files done and
  failed, events, bytes, busy seconds, its last error. Thread-safe.
- :class:`TrackedWorker`: the :class:`~transformers.worker.Worker` plus, around
  each file, the log ids (``request_id``, ``file_id``) and the activity.
- :class:`TrackingReporter`: passes verdicts through and counts them.
- :class:`Heartbeat`: a thread that sends every activity's snapshot at once on
  a change and every ``interval`` seconds otherwise (so a quiet worker still
  shows as alive). A failed send is logged and forgotten: a heartbeat must
  never slow or stop the work.

``delivery worker`` sends heartbeats over HTTP (``POST /internal/heartbeat``);
the embedded pool tracks each child from its slot in the serving process and
hands snapshots straight to the API's registry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from delivery.broker.base import Verdict
from delivery.logs import log_context
from delivery.messages import FAILURE, FileReport, FileTask
from transformers.worker import Reporter, Worker

__all__ = ["Activity", "TrackedWorker", "TrackingReporter", "Heartbeat", "HEARTBEAT_SECONDS",
           "worker_name"]

log = logging.getLogger("delivery.heartbeat")
HEARTBEAT_SECONDS = 5.0


def worker_name(suffix: str | None = None) -> str:
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}/{suffix}" if suffix else base


class Activity:
    def __init__(self, name: str, kind: str = "worker") -> None:
        self.name = name
        self.kind = kind
        self.pid: int | None = os.getpid()
        self.started = time.time()
        self._lock = threading.Lock()
        self._task: FileTask | None = None
        self._since: float | None = None
        self.files_done = self.files_failed = 0
        self.events_in = self.events_out = self.bytes = 0
        self.busy_seconds = 0.0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.last_error_request: str | None = None  # whose file it was (for isolation)
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def begin(self, task: FileTask) -> None:
        with self._lock:
            self._task, self._since = task, time.time()
        self._changed()

    def end(self) -> None:
        with self._lock:
            self._task = self._since = None
        self._changed()

    def recorded(self, report: FileReport) -> None:
        with self._lock:
            if report.status == FAILURE:
                self.files_failed += 1
                self.last_error = f"file {report.file_id} of {report.request_id}: {report.error}"
                self.last_error_time = time.time()
                self.last_error_request = report.request_id
            else:
                self.files_done += 1
                self.events_in += report.events_in
                self.events_out += report.events_out
                self.bytes += report.total_bytes
                self.busy_seconds += report.seconds

    def error(self, message: str, request_id: str | None = None) -> None:
        with self._lock:
            self.last_error, self.last_error_time = message, time.time()
            self.last_error_request = request_id
        self._changed()

    def snapshot(self) -> dict[str, Any]:
        """The heartbeat body (JSON-ready)."""
        with self._lock:
            task = self._task
            return {
                "worker": self.name, "kind": self.kind, "pid": self.pid,
                "started": self.started, "sent": time.time(),
                "request_id": task.request_id if task else None,
                "file_id": task.file_id if task else None,
                "file": task.replicas[0] if task and task.replicas else None,
                "file_started": self._since,
                "files_done": self.files_done, "files_failed": self.files_failed,
                "events_in": self.events_in, "events_out": self.events_out,
                "bytes": self.bytes, "busy_seconds": round(self.busy_seconds, 3),
                "last_error": self.last_error, "last_error_time": self.last_error_time,
                "last_error_request": self.last_error_request,
            }


class TrackingReporter:
    """A reporter that also counts each verdict it passes on into an :class:`Activity`."""

    def __init__(self, inner: Reporter, activity: Activity) -> None:
        self.inner = inner
        self.activity = activity

    def record(self, report: FileReport) -> None:
        self.inner.record(report)
        self.activity.recorded(report)

    def pending(self, request_id: str, file_id: int) -> bool:
        return self.inner.pending(request_id, file_id)


class TrackedWorker(Worker):
    """A Worker whose log lines carry the file's ids and whose activity is tracked."""

    def __init__(self, *args: Any, activity: Activity | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.activity = activity
        if activity is not None and not isinstance(self.reporter, TrackingReporter):
            self.reporter = TrackingReporter(self.reporter, activity)

    def handle(self, task: FileTask, attempts: int) -> Verdict:
        with log_context(request_id=task.request_id, file_id=task.file_id):
            if self.activity is not None:
                self.activity.begin(task)
            try:
                return super().handle(task, attempts)
            finally:
                if self.activity is not None:
                    self.activity.end()


class Heartbeat:
    """Sends snapshots of ``activities`` with ``send`` from a daemon thread."""

    def __init__(self, activities: Sequence[Activity], send: Callable[[dict[str, Any]], Any],
                 interval: float = HEARTBEAT_SECONDS) -> None:
        self.activities = list(activities)
        self.send = send
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for activity in self.activities:
            activity.on_change = self.poke

    def poke(self) -> None:
        self._wake.set()

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="delivery-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            self._wake.clear()
            for activity in self.activities:
                try:
                    self.send(activity.snapshot())
                    failing = False
                except Exception as err:  # noqa: BLE001 - never let a heartbeat stop work
                    if not failing:  # one line per outage, not one per beat
                        log.warning("heartbeat of %s not delivered: %s", activity.name, err)
                    failing = True
            self._wake.wait(self.interval)
            time.sleep(0.05)  # coalesce a burst of changes into one send

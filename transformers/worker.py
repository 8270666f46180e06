"""The worker: one long-lived process consuming every request's files.

For each :class:`~delivery.messages.FileTask`: skip it if its request was
cancelled; transform it with the engine into a scratch directory; upload the
output; report the result; only then is the message acknowledged (the
broker's ``Verdict.ACK``). Permanent errors are reported as the file's failure
at once. Transient ones (network, store, broker) are retried here with
backoff, stage by stage (a failed upload does not redo the transform), then
handed back to the broker, whose delivery limit ends in the dead-letter queue.
A redelivered file that already succeeded is acknowledged without new work. A report is an idempotent upsert, so a redelivered file can
never be counted twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from delivery.broker.base import Broker, Verdict
from delivery.errors import PermanentError, TransientError
from delivery.messages import FAILURE, SUCCESS, FileReport, FileTask, file_sha256
from delivery.objects.base import ObjectStore
from delivery.policy import SourcePolicy
from delivery.selection import parse_selection
from transformers.run import FileResult, TransformOptions, transform_file

__all__ = ["Reporter", "Worker"]

log = logging.getLogger("delivery.worker")
T = TypeVar("T")


class Reporter(Protocol):
    """Where results go: the store itself (embedded) or the API's internal endpoint."""

    def record(self, report: FileReport) -> None: ...

    def pending(self, request_id: str, file_id: int) -> bool:
        """False if the request is gone or final, or the file already succeeded."""
        ...


def _scratch_root(base: Path | None) -> Path:
    """This process's scratch folder; folders of dead workers (SIGKILLed mid-file) go."""
    parent = Path(base or tempfile.gettempdir())
    for old in parent.glob("delivery-worker-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    mine = parent / f"delivery-worker-{os.getpid()}"
    mine.mkdir(parents=True, exist_ok=True)
    return mine


class Worker:
    def __init__(self, objects: ObjectStore, reporter: Reporter, policy: SourcePolicy, *,
                 retries: int = 3, backoff: float = 0.5, scratch: Path | None = None,
                 options: Callable[[str], TransformOptions] | None = None) -> None:
        self.objects = objects
        self.reporter = reporter
        self.policy = policy
        self.retries = retries
        self.backoff = backoff
        self.scratch = _scratch_root(scratch)
        self.options = options or (lambda fmt: TransformOptions(format=fmt))

    def handle(self, task: FileTask, attempts: int) -> Verdict:
        """Process one task; the return value tells the broker whether to ack it."""
        if not self.reporter.pending(task.request_id, task.file_id):
            log.info("skipping file %s of %s: request final or file done", task.file_id,
                     task.request_id)
            return Verdict.ACK
        work = Path(tempfile.mkdtemp(prefix="file-", dir=self.scratch))
        try:
            try:
                result = self._retrying("transform", task, lambda: self._transform(task, work))
                output = Path(result.output or "")
                digest = file_sha256(output)
                size = self._retrying("upload", task, lambda: self.objects.put_file(
                    task.request_id, output.name, output))
                report = FileReport(task.request_id, task.file_id, SUCCESS,
                                    object_name=output.name, total_bytes=size, sha256=digest,
                                    events_in=result.events_in, events_out=result.events_out,
                                    seconds=round(result.seconds, 4))
            except PermanentError as err:
                report = FileReport(task.request_id, task.file_id, FAILURE, error=err.reason)
            self._retrying("report", task, lambda: self.reporter.record(report))
            log.info("file %d of %s recorded: %s, %d events out, %d bytes", task.file_id,
                     task.request_id, report.status, report.events_out, report.total_bytes)
            return Verdict.ACK
        except TransientError:
            return Verdict.REQUEUE
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _retrying(self, stage: str, task: FileTask, step: Callable[[], T]) -> T:
        """Run one stage, retrying only that stage on transient errors, with backoff."""
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                return step()
            except TransientError as err:
                log.warning("file %s of %s: %s failed: %s (try %d of %d)", task.file_id,
                            task.request_id, stage, err.reason, attempt, self.retries)
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _transform(self, task: FileTask, work: Path) -> FileResult:
        return transform_file(list(task.replicas), parse_selection(task.selection), work,
                              policy=self.policy, request_id=task.request_id,
                              options=self.options(task.format))

    def run(self, broker: Broker, stop: threading.Event | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or ``stop``); the current file is finished first."""
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        broker.consume(self.handle, stop)

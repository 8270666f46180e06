"""The worker: one long-lived process consuming every request's files.

For each :class:`~delivery.messages.FileTask`: skip it if its request was
cancelled; transform it with the engine into a scratch directory; upload the
output; report the result; only then is the message acknowledged (the
broker's ``Verdict.ACK``). Permanent errors are reported as the file's failure
at once. Transient ones (network, store, broker) are retried here with
backoff, then handed back to the broker, whose delivery limit ends in the
dead-letter queue. A report is an idempotent upsert, so a redelivered file can
never be counted twice.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from delivery.broker.base import Broker, Verdict
from delivery.errors import PermanentError, TransientError
from delivery.messages import FAILURE, SUCCESS, FileReport, FileTask
from delivery.objects.base import ObjectStore
from delivery.policy import SourcePolicy
from delivery.selection import parse_selection
from transformers.run import TransformOptions, transform_file

__all__ = ["Reporter", "Worker", "FINAL_STATUSES"]

log = logging.getLogger("delivery.worker")
FINAL_STATUSES = ("Complete", "Fatal", "Canceled", "Bad Dataset")


class Reporter(Protocol):
    """Where results go: the store itself (embedded) or the API's internal endpoint."""

    def record(self, report: FileReport) -> None: ...

    def status(self, request_id: str) -> str | None: ...


class Worker:
    def __init__(self, objects: ObjectStore, reporter: Reporter, policy: SourcePolicy, *,
                 retries: int = 3, backoff: float = 0.5, scratch: Path | None = None,
                 options: Callable[[str], TransformOptions] | None = None) -> None:
        self.objects = objects
        self.reporter = reporter
        self.policy = policy
        self.retries = retries
        self.backoff = backoff
        self.scratch = scratch
        self.options = options or (lambda fmt: TransformOptions(format=fmt))

    def handle(self, task: FileTask, attempts: int) -> Verdict:
        """Process one task; the return value tells the broker whether to ack it."""
        status = self.reporter.status(task.request_id)
        if status is None or status == "Canceled" or status in FINAL_STATUSES:
            log.info("skipping file %s of %s request %s", task.file_id, status, task.request_id)
            return Verdict.ACK
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                self.reporter.record(self._transform(task))
                return Verdict.ACK
            except PermanentError as err:
                self.reporter.record(FileReport(task.request_id, task.file_id, FAILURE,
                                                error=err.reason))
                return Verdict.ACK
            except TransientError as err:
                log.warning("file %s of %s: %s (try %d of %d)", task.file_id, task.request_id,
                            err.reason, attempt, self.retries)
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
        return Verdict.REQUEUE

    def _transform(self, task: FileTask) -> FileReport:
        work = Path(tempfile.mkdtemp(prefix="delivery-", dir=self.scratch))
        try:
            result = transform_file(list(task.replicas), parse_selection(task.selection), work,
                                    policy=self.policy, request_id=task.request_id,
                                    options=self.options(task.format))
            assert result.output is not None
            output = Path(result.output)
            size = self.objects.put_file(task.request_id, output.name, output)
            return FileReport(task.request_id, task.file_id, SUCCESS, object_name=output.name,
                              total_bytes=size, events_in=result.events_in,
                              events_out=result.events_out, seconds=round(result.seconds, 4))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run(self, broker: Broker, stop: threading.Event | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or ``stop``); the current file is finished first."""
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        broker.consume(self.handle, stop)

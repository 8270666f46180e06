"""The worker: one long-lived process consuming every request's files.

For each :class:`~delivery.messages.FileTask`: skip it if its request was
cancelled or the file already succeeded (a redelivery); transform it into a
scratch directory, in a child process within the per-file time and memory
limits (:mod:`transformers.isolate`); upload the output; report the result;
only then is the message acknowledged (the broker's ``Verdict.ACK``).

- Permanent errors (a bad file, too much memory) are reported as the file's
  failure at once.
- Transient errors of the input (network) are retried here a few times with
  backoff, then the task goes back to the broker. A timed-out or crashed
  transform goes straight back: the broker's delivery limit decides.
- The service's own outages (store, API, database: upload, report, and the
  pending check) are waited out with backoff for up to ``patience`` seconds
  while the task is held, so an outage does not burn the file's deliveries.
- On the last delivery the broker allows, a transient failure is reported as
  the file's failure with its reason, and the task is put back once more so
  that the broker moves it to the dead-letter queue.

A report is an idempotent upsert, so a redelivered file can never be counted
twice. :mod:`transformers.testhooks` adds pause and crash points for tests.
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

from delivery.broker.base import DEFAULT_DELIVERY_LIMIT, Broker, Verdict
from delivery.errors import PermanentError, TransientError
from delivery.messages import FAILURE, SUCCESS, FileReport, FileTask, file_sha256
from delivery.objects.base import ObjectStore
from delivery.policy import SourcePolicy
from delivery.selection import parse_selection
from transformers import testhooks
from transformers.isolate import Contained, Limits, run_isolated
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
    """``limits``: per-file time and memory (``Limits.from_settings``; default 600 s, no
    memory cap); ``delivery_limit`` is the broker's (``run`` takes it from the broker)."""

    def __init__(self, objects: ObjectStore, reporter: Reporter, policy: SourcePolicy, *,
                 retries: int = 3, backoff: float = 0.5, patience: float = 600.0,
                 scratch: Path | None = None,
                 options: Callable[[str], TransformOptions] | None = None,
                 limits: Limits | None = None,
                 delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
        self.objects = objects
        self.reporter = reporter
        self.policy = policy
        self.retries = retries
        self.backoff = backoff
        self.patience = patience
        self.scratch = _scratch_root(scratch)
        self.options = options or (lambda fmt: TransformOptions(format=fmt))
        self.limits = limits if limits is not None else Limits()
        self.delivery_limit = delivery_limit
        self.stopping = threading.Event()

    def handle(self, task: FileTask, attempts: int) -> Verdict:
        """Process one task; the return value tells the broker whether to ack it."""
        try:
            if not self._patiently("check", task, lambda: self.reporter.pending(
                    task.request_id, task.file_id)):
                log.info("skipping file %s of %s: request final or file done", task.file_id,
                         task.request_id)
                return Verdict.ACK
        except TransientError:
            return Verdict.REQUEUE
        work = Path(tempfile.mkdtemp(prefix="file-", dir=self.scratch))
        verdict = Verdict.ACK
        try:
            try:
                result = self._retrying("transform", task, lambda: self._transform(task, work))
                testhooks.pause("before-upload", task)
                output = Path(result.output or "")
                digest = file_sha256(output)
                size = self._patiently("upload", task, lambda: self.objects.put_file(
                    task.request_id, output.name, output))
                report = FileReport(task.request_id, task.file_id, SUCCESS,
                                    object_name=output.name, total_bytes=size, sha256=digest,
                                    events_in=result.events_in, events_out=result.events_out,
                                    seconds=round(result.seconds, 4))
            except PermanentError as err:
                report = FileReport(task.request_id, task.file_id, FAILURE, error=err.reason)
            except TransientError as err:
                if attempts <= self.delivery_limit or self.stopping.is_set():
                    log.warning("file %s of %s: %s; putting it back (delivery %d of at most "
                                "%d)", task.file_id, task.request_id, err.reason, attempts,
                                self.delivery_limit + 1)
                    return Verdict.REQUEUE
                # The broker's last delivery: record why, then let it dead-letter the task.
                report = FileReport(task.request_id, task.file_id, FAILURE, error=(
                    f"gave up after {attempts} deliveries (delivery limit reached; moved to "
                    f"the dead-letter queue); the last one: {err.reason}"))
                verdict = Verdict.REQUEUE
            testhooks.pause("before-report", task)
            self._patiently("report", task, lambda: self.reporter.record(report))
            log.info("file %d of %s recorded: %s, %d events out, %d bytes", task.file_id,
                     task.request_id, report.status, report.events_out, report.total_bytes)
            testhooks.pause("before-ack", task)
            return verdict
        except TransientError:
            return Verdict.REQUEUE
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _retrying(self, stage: str, task: FileTask, step: Callable[[], T]) -> T:
        """Run one stage, retrying only that stage on transient errors, with backoff.

        A contained failure (time limit, crash) is not retried here: it already cost
        a whole run, and another delivery may land on another worker.
        """
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                return step()
            except Contained:
                raise
            except TransientError as err:
                log.warning("file %s of %s: %s failed: %s (try %d of %d)", task.file_id,
                            task.request_id, stage, err.reason, attempt, self.retries)
                if attempt == self.retries or self.stopping.wait(delay):
                    raise
                delay *= 2
        raise AssertionError("unreachable")

    def _patiently(self, stage: str, task: FileTask, step: Callable[[], T]) -> T:
        """Run a stage that needs the service's own parts (store, API), waiting out their
        outage with capped backoff for up to ``patience`` seconds, or until stopped."""
        deadline = time.monotonic() + self.patience
        delay, tries = self.backoff, 0
        while True:
            try:
                return step()
            except TransientError as err:
                tries += 1
                left = deadline - time.monotonic()
                log.warning("file %s of %s: %s failed: %s (try %d; waiting up to %.0f s more)",
                            task.file_id, task.request_id, stage, err.reason, tries,
                            max(left, 0))
                if left <= 0 or self.stopping.wait(min(delay, left)):
                    raise
                delay = min(delay * 2, 10.0)

    def _transform(self, task: FileTask, work: Path) -> FileResult:
        def run() -> FileResult:  # in the child process
            testhooks.crash(task)
            return transform_file(list(task.replicas), parse_selection(task.selection), work,
                                  policy=self.policy, request_id=task.request_id,
                                  options=self.options(task.format))

        return run_isolated(run, self.limits)

    def run(self, broker: Broker, stop: threading.Event | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or ``stop``); the current file is finished first."""
        if stop is not None:
            self.stopping = stop
        self.delivery_limit = broker.delivery_limit
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stopping.set())
        broker.consume(self.handle, self.stopping)

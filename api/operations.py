"""The operations state of one service: its metrics and its workers' heartbeats.

One :class:`Operations` lives on each :class:`~api.services.Services` (field
``ops``), so every app and every test stack has its own Prometheus registry,
and the embedded pool (which has the services but not the app) reaches it too.
:func:`record_result` is the one way verdicts enter the store with counting:
the API's ``/internal/results`` and the embedded default's reporter both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from api.metrics import Metrics
from api.workers import WorkerRegistry
from delivery.messages import FileReport
from transformers.reporters import StoreReporter

__all__ = ["Operations", "operations", "record_result", "CountingReporter"]


@dataclass
class Operations:
    metrics: Metrics = field(default_factory=Metrics)
    workers: WorkerRegistry = field(default_factory=WorkerRegistry)


def operations(services: Any = None) -> Operations:
    """The operations state of ``services`` (default: the current app's)."""
    if services is None:
        from api.servicex import services as current

        services = current()
    found: Operations = services.ops
    return found


def record_result(services: Any, report: FileReport) -> bool:
    """Record a verdict; count it in the metrics only if the store changed.

    The store reads the file's earlier status under the lock it records with,
    so a success replacing a success (the same file again) is never counted
    twice, even when reports race.
    """
    changed, before = services.store.record_verdict(report)
    if changed:
        operations(services).metrics.count(report, before)
    return changed


class CountingReporter(StoreReporter):
    """The embedded default's reporter: straight into the store, counted, news published."""

    def __init__(self, services: Any) -> None:
        super().__init__(services.store, on_record=services.news.publish)
        self.services = services

    def record(self, report: FileReport) -> None:
        record_result(self.services, report)
        if self.on_record is not None:
            self.on_record()

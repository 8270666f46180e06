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

from sqlalchemy import select

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


def _status_of(store: Any, report: FileReport) -> str | None:
    from api.store.schema import results

    with store._read() as conn:  # the store's read transaction (error mapping, locks)
        found = conn.execute(select(results.c.status).where(
            results.c.request_id == report.request_id,
            results.c.file_id == report.file_id)).scalar()
    return None if found is None else str(found)


def record_result(services: Any, report: FileReport) -> bool:
    """Record a verdict; count it in the metrics only if the store changed.

    The earlier status is read just before: a success replacing a success is
    the same file again. (Two *different* first reports of one file racing
    each other could both count; identical ones, the redelivery case, cannot.)
    """
    before = _status_of(services.store, report)
    changed = bool(services.store.record(report))
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

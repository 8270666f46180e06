"""``GET /metrics``: Prometheus text format, from a registry per service (not the global one).

============================================== ========= ===================================
``delivery_files_processed_total``             counter   files transformed successfully
``delivery_files_failed_total``                counter   files given up on (permanent error,
                                                         dead letter)
``delivery_events_delivered_total``            counter   events written to outputs
``delivery_events_read_total``                 counter   events read from inputs
``delivery_bytes_delivered_total``             counter   bytes of outputs stored
``delivery_file_transform_seconds``            histogram per-file transform time (successes)
``delivery_requests{status}``                  gauge     requests in the store, by status
``delivery_queue_depth``                       gauge     file tasks waiting in the queue
``delivery_dead_letter_depth``                 gauge     tasks in the dead-letter queue
``delivery_workers_live``                      gauge     workers with a recent heartbeat
``delivery_worker_last_seen_timestamp_seconds`` gauge    each worker's last heartbeat
============================================== ========= ===================================

Counters move when a verdict is recorded and the store says it changed
something (:func:`api.operations.record_result`): a redelivered or repeated
report counts nothing, and a file counts once as processed however often it
is reported. Outputs copied from an earlier identical request are not counted
(nothing was processed). With auth on, ``/metrics`` needs an admin's access
token or the service token; with auth off it is public.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from delivery.messages import SUCCESS, FileReport

__all__ = ["Metrics", "blueprint", "CONTENT_TYPE"]

blueprint = Blueprint("metrics", __name__)
log = logging.getLogger("delivery.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _Live(Collector):
    """Gauges read at scrape time: store, broker and heartbeats (no stale series)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        from api.store.schema import STATUSES

        svc = self.services
        by_status = GaugeMetricFamily("delivery_requests", "Requests in the store, by status",
                                      labels=["status"])
        found = svc.store.status_counts()
        for status in STATUSES:
            by_status.add_metric([status], found.get(status, 0))
        yield by_status
        for name, text, read in (
                ("delivery_queue_depth", "File tasks waiting in the queue", svc.broker.depth),
                ("delivery_dead_letter_depth", "Tasks in the dead-letter queue",
                 svc.broker.dead_depth)):
            try:
                yield GaugeMetricFamily(name, text, value=read())
            except Exception as err:  # noqa: BLE001 - a broker outage must not lose the rest
                log.warning("%s unavailable: %s", name, err)
        workers = svc.ops.workers.workers()
        yield GaugeMetricFamily("delivery_workers_live", "Workers with a recent heartbeat",
                                value=sum(1 for w in workers if w["live"]))
        seen = GaugeMetricFamily("delivery_worker_last_seen_timestamp_seconds",
                                 "Unix time of each worker's last heartbeat", labels=["worker"])
        for w in workers:
            seen.add_metric([w["worker"]], w["last_seen"])
        yield seen


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.processed = Counter("delivery_files_processed", "Files transformed successfully",
                                 registry=r)
        self.failed = Counter("delivery_files_failed", "Files that failed for good", registry=r)
        self.events = Counter("delivery_events_delivered", "Events written to outputs",
                              registry=r)
        self.events_read = Counter("delivery_events_read", "Events read from inputs",
                                   registry=r)
        self.bytes = Counter("delivery_bytes_delivered", "Bytes of outputs stored", registry=r)
        self.seconds = Histogram("delivery_file_transform_seconds",
                                 "Per-file transform time of successful files",
                                 buckets=SECONDS_BUCKETS, registry=r)
        self._live: _Live | None = None
        self._lock = threading.Lock()

    def count(self, report: FileReport, before: str | None) -> None:
        """Count a verdict that changed the store; ``before`` is the file's earlier status."""
        if report.status == SUCCESS:
            if before == SUCCESS:  # a success replacing a success: the same file again
                return
            self.processed.inc()
            self.events.inc(max(report.events_out, 0))
            self.events_read.inc(max(report.events_in, 0))
            self.bytes.inc(max(report.total_bytes, 0))
            self.seconds.observe(max(report.seconds, 0.0))
        elif before is None:  # a first verdict; a failure replacing a failure is not news
            self.failed.inc()

    def render(self, services: Any) -> bytes:
        with self._lock:
            if self._live is None:
                self._live = _Live(services)
                self.registry.register(self._live)
        return generate_latest(self.registry)


@blueprint.get("/metrics")
def metrics() -> Any:
    from api.auth import require_admin_or_service
    from api.servicex import services

    require_admin_or_service()
    svc = services()
    return Response(svc.ops.metrics.render(svc), content_type=CONTENT_TYPE)

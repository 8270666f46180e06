"""Wiring: build the services from :class:`~delivery.config.Settings` and run them.

``delivery serve`` with no configuration runs the embedded default: SQLite, a
local result directory, an in-process broker and N worker processes, all from
this one command. With ``DELIVERY_BROKER_URL`` set it is the API alone (plus
the dead-letter watcher), and ``delivery worker`` processes do the work.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from api.services import Services
from delivery.broker import open_broker
from delivery.broker.base import Verdict
from delivery.config import Settings
from delivery.errors import TransientError
from delivery.messages import FAILURE, FileReport, FileTask
from delivery.objects import open_store
from delivery.policy import SourcePolicy
from delivery.preflight import mask_url

__all__ = ["Running", "build_services", "start_background", "serve"]

log = logging.getLogger("delivery.serve")


def build_services(settings: Settings) -> Services:
    from api.store import RequestStore

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return Services(
        settings=settings,
        store=RequestStore(settings.database_url),
        broker=open_broker(settings.broker_url, settings.queue),
        objects=open_store(settings),
        policy=SourcePolicy.create(settings.allowed_roots),
    )


@dataclass
class Running:
    """Background parts of a serving process: the embedded pool, the dead-letter watcher."""

    stop: threading.Event = field(default_factory=threading.Event)
    pool: Any = None
    threads: list[threading.Thread] = field(default_factory=list)

    def close(self) -> None:
        self.stop.set()
        if self.pool is not None:
            self.pool.stop()
        for thread in self.threads:
            thread.join(timeout=10)


def start_background(services: Services, workers: int) -> Running:
    from api.operations import CountingReporter

    running = Running()
    reporter = CountingReporter(services)  # the store, the metrics, the long-poll news

    def dead(task: FileTask, attempts: int) -> Verdict:
        log.info("dead letter: file %d of %s after %d deliveries", task.file_id,
                 task.request_id, attempts)
        try:
            # A worker that saw the last delivery fail already recorded why: keep that.
            if any(r.file_id == task.file_id
                   for r in services.store.results(task.request_id, status=FAILURE)):
                return Verdict.ACK
            reporter.record(FileReport(
                task.request_id, task.file_id, FAILURE,
                error=f"gave up after {attempts} deliveries: each one crashed or stalled its "
                      "worker, or kept hitting transient errors (delivery limit reached; "
                      "moved to the dead-letter queue)"))
        except TransientError as err:  # the store is down: back off, not spin on redelivery
            log.warning("dead letter of file %d of %s not recorded yet: %s", task.file_id,
                        task.request_id, err.reason)
            running.stop.wait(2.0)
            return Verdict.REQUEUE
        return Verdict.ACK

    watcher = threading.Thread(target=services.broker.consume_dead, args=(dead, running.stop),
                               name="delivery-dead-letters", daemon=True)
    watcher.start()
    running.threads.append(watcher)
    if services.settings.embedded_broker and workers > 0:
        from transformers.pool import ChildSpec, ProcessPool

        running.pool = ProcessPool(services.broker, reporter,
                                   ChildSpec(services.settings, services.policy), workers,
                                   heartbeat=services.ops.workers.beat)
        running.pool.start()
    return running


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    from werkzeug.serving import make_server

    from api.app import create_app

    services = build_services(settings)
    running = start_background(services, workers)
    server = make_server(host, port, create_app(services), threaded=True)
    mode = (f"embedded: {workers} worker process(es), SQLite/local store"
            if settings.embedded_broker else f"API only; broker {mask_url(settings.broker_url or '')}")
    print(f"delivery serving on http://{host}:{server.server_port} ({mode}); "
          f"state in {settings.state_dir}", flush=True)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (Kubernetes, `delivery up`) stops like Ctrl-C: the serve loop ends,
        # embedded workers finish their current file, the broker connection closes.
        signal.signal(signal.SIGTERM,
                      lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        running.close()
        services.broker.close()

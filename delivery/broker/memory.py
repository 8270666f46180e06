"""The embedded broker: an in-process queue with the same semantics as RabbitMQ.

Used when no broker URL is configured (one process runs the API and the
workers). There is no I/O thread to keep alive, so :meth:`MemoryBroker.consume`
runs the handler in the calling thread; several threads may consume at once and
each gets distinct tasks (prefetch 1). The delivery limit counts like a RabbitMQ
quorum queue's ``x-delivery-limit``: a task may come back ``delivery_limit``
times, so it is delivered at most ``delivery_limit + 1`` times, and after that
last failed delivery it goes to the dead letters with ``attempts ==
delivery_limit + 1``. Nothing survives the process: that is the embedded mode's
bargain.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

from delivery.broker.base import DEFAULT_DELIVERY_LIMIT, Broker, Handler, Verdict, call_handler
from delivery.messages import FileTask

__all__ = ["MemoryBroker"]

log = logging.getLogger(__name__)

_POLL = 0.1  # seconds between looks at the stop event while the queue is empty

_Entry = tuple[FileTask, int]  # (task, attempts of its next delivery)


class MemoryBroker(Broker):
    """Thread-safe in-process work queue plus dead letters."""

    def __init__(self, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
        if delivery_limit < 0:
            raise ValueError(f"delivery_limit must be >= 0, got {delivery_limit}")
        self.delivery_limit = delivery_limit
        self._ready: deque[_Entry] = deque()
        self._dead: deque[_Entry] = deque()
        self._cond = threading.Condition()

    def publish(self, tasks: Sequence[FileTask]) -> None:
        with self._cond:
            self._ready.extend((task, 1) for task in tasks)
            self._cond.notify_all()

    def consume(self, handler: Handler, stop: threading.Event) -> None:
        self._serve(self._ready, handler, stop, dead=False)

    def consume_dead(self, handler: Handler, stop: threading.Event) -> None:
        self._serve(self._dead, handler, stop, dead=True)

    def depth(self) -> int:
        with self._cond:
            return len(self._ready)

    def dead_depth(self) -> int:
        with self._cond:
            return len(self._dead)

    # -- internals ---------------------------------------------------------

    def _take(self, queue: deque[_Entry], stop: threading.Event) -> _Entry | None:
        with self._cond:
            while not stop.is_set():
                if queue:
                    return queue.popleft()
                self._cond.wait(_POLL)
            return None

    def _serve(
        self, queue: deque[_Entry], handler: Handler, stop: threading.Event, *, dead: bool
    ) -> None:
        while True:
            entry = self._take(queue, stop)
            if entry is None:
                return
            task, attempts = entry
            verdict = Verdict.REQUEUE
            try:
                verdict = call_handler(handler, task, attempts)
            finally:  # also on BaseException (KeyboardInterrupt...): the task is not lost
                if verdict is not Verdict.ACK:
                    self._put_back(task, attempts, dead=dead)

    def _put_back(self, task: FileTask, attempts: int, *, dead: bool) -> None:
        with self._cond:
            if dead:
                self._dead.append((task, attempts))
            elif attempts > self.delivery_limit:
                log.warning("%s file %d failed %d deliveries; dead-lettered",
                            task.request_id, task.file_id, attempts)
                self._dead.append((task, attempts))
            else:
                self._ready.append((task, attempts + 1))
            self._cond.notify_all()

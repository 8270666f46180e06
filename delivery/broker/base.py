"""The broker seam: one work queue of :class:`~delivery.messages.FileTask`, plus dead letters.

Contract, the same for every backend:

- :meth:`Broker.publish` returns only when the broker has taken every task
  (RabbitMQ: publisher confirms on a durable quorum queue, persistent
  messages); otherwise it raises :class:`~delivery.errors.TransientError` and
  the caller must treat the whole batch as not sent.
- :meth:`Broker.consume` hands one task at a time (prefetch 1) to ``handler``,
  which runs off the broker's I/O thread so heartbeats keep flowing however long
  the file takes. The handler's :class:`Verdict` decides: ``ACK`` (done, its
  result recorded), ``REQUEUE`` (put back, e.g. transient failure or shutdown).
  If the handler raises, or the consuming process dies, the task goes back too.
- A task may come back ``delivery_limit`` times (RabbitMQ's quorum-queue
  ``x-delivery-limit``): it is delivered at most ``delivery_limit + 1`` times,
  and when that last delivery fails too it goes to the dead-letter queue. Every
  return counts: REQUEUE, a raising handler, a dying consumer, and a requeue at
  shutdown. :meth:`Broker.consume_dead` hands dead tasks to a handler that
  records the file as failed (``attempts`` says how many deliveries it had:
  ``delivery_limit + 1``).
- ``consume`` and ``consume_dead`` return when ``stop`` is set, after the
  current task; on a lost connection they reconnect with backoff.
"""

from __future__ import annotations

import enum
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from delivery.messages import FileTask

__all__ = ["Broker", "Verdict", "Handler", "DEFAULT_DELIVERY_LIMIT", "call_handler"]

log = logging.getLogger("delivery.broker")

DEFAULT_DELIVERY_LIMIT = 3


class Verdict(enum.Enum):
    ACK = "ack"
    REQUEUE = "requeue"


# handler(task, attempts) -> Verdict; attempts is 1 on the first delivery.
Handler = Callable[[FileTask, int], Verdict]


def call_handler(handler: Handler, task: FileTask, attempts: int) -> Verdict:
    """The handler's verdict; an exception (logged) or a non-verdict puts the task back."""
    try:
        verdict = handler(task, attempts)
    except Exception:
        log.exception("handler failed on %s file %d (attempt %d); putting it back",
                      task.request_id, task.file_id, attempts)
        return Verdict.REQUEUE
    return verdict if isinstance(verdict, Verdict) else Verdict.REQUEUE


class Broker(ABC):
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    @abstractmethod
    def publish(self, tasks: Sequence[FileTask]) -> None: ...

    @abstractmethod
    def consume(self, handler: Handler, stop: threading.Event) -> None: ...

    @abstractmethod
    def consume_dead(self, handler: Handler, stop: threading.Event) -> None: ...

    @abstractmethod
    def depth(self) -> int:
        """Tasks waiting (not counting those being worked on)."""

    @abstractmethod
    def dead_depth(self) -> int:
        """Tasks waiting in the dead-letter queue."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass

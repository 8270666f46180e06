"""The RabbitMQ backend: a durable quorum queue with a dead-letter queue, over pika.

Topology (declared idempotently by every connection; never auto-deleted)::

    <queue>        quorum, durable; x-delivery-limit, dead letters -> exchange <queue>.dead
    <queue>.dead   fanout exchange, durable, bound to the quorum queue <queue>.dead

Dead-lettering is ``at-least-once`` (which RabbitMQ ties to ``x-overflow:
reject-publish``; there is no length limit, so that never rejects): a dead
letter is kept in ``<queue>`` until ``<queue>.dead`` has confirmed it, so a file
cannot vanish and leave its request unfinished.

RabbitMQ 3.10 quirks this relies on (checked against 3.10.8):

- ``x-delivery-count`` counts *returns* (nack/reject with requeue, or the
  channel/connection closing with the message unacked). It is absent on the
  first ``basic.consume`` delivery (``0`` on a ``basic.get``); attempts =
  count + 1.
- ``x-delivery-limit: L`` allows L returns, i.e. L + 1 deliveries; the message
  is dead-lettered when it comes back the (L + 1)-th time.
- In ``<queue>.dead`` the message starts a fresh ``x-delivery-count`` and its
  ``x-death`` count is the number of times it was dead-lettered (1), not its
  deliveries; so a ``delivery_limit`` death reports attempts = L + 1.
- Redeclaring a queue with other arguments (e.g. another delivery limit) is a
  406 PRECONDITION_FAILED: raised as :class:`RuntimeError`, never retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from delivery.broker.base import DEFAULT_DELIVERY_LIMIT, Broker, Handler, Verdict, call_handler
from delivery.errors import TransientError
from delivery.messages import FileTask

__all__ = ["RabbitBroker"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_POLL = 0.5  # seconds: how often the I/O thread looks at stop / the handler
_BACKOFF_START, _BACKOFF_MAX = 0.5, 5.0
# Failures after which a new connection may help (AMQPError covers channel errors).
_RETRYABLE: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


def _describe(exc: BaseException) -> str:
    # pika's connection errors print empty; their args hold the underlying cause.
    text = str(exc).strip() or ", ".join(repr(arg) for arg in exc.args)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close_quietly(conn: pika.BlockingConnection | None) -> None:
    if conn is not None and conn.is_open:
        try:
            conn.close()
        except Exception:  # already broken: nothing to clean up
            pass


def _message_count(chan: BlockingChannel, queue: str) -> int:
    return int(chan.queue_declare(queue, passive=True).method.message_count)


class _ConnectionLost(Exception):
    """The connection broke while a handler ran: its message will be redelivered."""


_RECONNECT: tuple[type[BaseException], ...] = (_ConnectionLost, *_RETRYABLE)


class RabbitBroker(Broker):
    """Work queue on RabbitMQ. Publishing is thread-safe; each consume() owns a connection."""

    def __init__(
        self,
        url: str,
        queue: str = "delivery.files",
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        heartbeat: int = 30,
    ) -> None:
        if delivery_limit < 0:
            raise ValueError(f"delivery_limit must be >= 0, got {delivery_limit}")
        self.url = url
        self.queue = queue
        self.dead_queue = f"{queue}.dead"
        self.delivery_limit = delivery_limit
        self.heartbeat = heartbeat
        params = pika.URLParameters(url)  # validates the URL now
        self._where = f"{params.host}:{params.port}"  # no credentials in errors
        self._lock = threading.Lock()  # guards the publishing connection
        self._conn: pika.BlockingConnection | None = None
        self._chan: BlockingChannel | None = None

    def queue_arguments(self) -> dict[str, Any]:
        """The work queue's ``x-`` arguments (fixed once the queue exists)."""
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    # -- publishing (any thread) -------------------------------------------

    def publish(self, tasks: Sequence[FileTask]) -> None:
        if not tasks:
            return
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        sent = 0

        def send(chan: BlockingChannel) -> None:
            nonlocal sent
            for task in tasks[sent:]:  # confirm mode: each returns once the broker has it
                chan.basic_publish("", self.queue, task.to_bytes(), props, mandatory=True)
                sent += 1

        self._with_channel(send)

    def depth(self) -> int:
        return self._with_channel(lambda chan: _message_count(chan, self.queue))

    def dead_depth(self) -> int:
        return self._with_channel(lambda chan: _message_count(chan, self.dead_queue))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def delete_queues(self) -> None:
        """Delete the work queue, its dead letters and their exchange (tests, teardown)."""

        def delete(chan: BlockingChannel) -> None:
            chan.queue_delete(self.queue)
            chan.queue_delete(self.dead_queue)
            chan.exchange_delete(self.dead_queue)

        self._with_channel(delete)
        self.close()  # the next connection declares them afresh

    def _with_channel(self, operation: Callable[[BlockingChannel], _T]) -> _T:
        """Run operation on the publishing channel; any broker failure is a TransientError."""
        with self._lock:
            retried = False
            while True:
                reused = self._conn is not None
                try:
                    return operation(self._publisher())
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    self._drop()
                    raise self._unavailable(exc) from exc
                except _RETRYABLE as exc:
                    self._drop()
                    if retried or not reused:
                        raise self._unavailable(exc) from exc
                    retried = True  # a connection the broker dropped while idle: one fresh try
                    log.info("connection to %s lost (%s); reconnecting", self._where,
                             _describe(exc))

    def _unavailable(self, exc: BaseException) -> TransientError:
        return TransientError(f"broker unavailable at {self._where}: {_describe(exc)}")

    def _publisher(self) -> BlockingChannel:
        """The confirm-mode publishing channel, (re)connected lazily; caller holds the lock."""
        if self._conn is not None and self._conn.is_open and self._chan and self._chan.is_open:
            self._conn.process_data_events(0)  # raises if the broker dropped us meanwhile
            return self._chan
        self._drop()
        conn = self._connect("publisher")
        try:
            chan = self._open_channel(conn)
            chan.confirm_delivery()
        except BaseException:
            _close_quietly(conn)
            raise
        self._conn, self._chan = conn, chan
        return chan

    def _connect(self, role: str) -> pika.BlockingConnection:
        params = pika.URLParameters(self.url)
        params.heartbeat = self.heartbeat
        params.connection_attempts = 1
        params.socket_timeout = 5.0
        params.blocked_connection_timeout = 30.0  # broker alarms: fail, don't hang
        # Shown by the management UI and `rabbitmqctl list_connections client_properties`.
        params.client_properties = {"connection_name": f"columnar-delivery {role} {self.queue}"}
        return pika.BlockingConnection(params)

    def _drop(self) -> None:
        conn, self._conn, self._chan = self._conn, None, None
        _close_quietly(conn)

    def _open_channel(self, conn: pika.BlockingConnection) -> BlockingChannel:
        chan = conn.channel()
        try:
            chan.exchange_declare(self.dead_queue, "fanout", durable=True)
            chan.queue_declare(self.dead_queue, durable=True,
                               arguments={"x-queue-type": "quorum"})
            chan.queue_bind(self.dead_queue, self.dead_queue)
            chan.queue_declare(self.queue, durable=True, arguments=self.queue_arguments())
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:
                raise RuntimeError(
                    f"RabbitMQ queue {self.queue!r} exists with other settings "
                    f"({exc.reply_text}); delete it or configure the same delivery limit"
                ) from None
            raise
        return chan

    # -- consuming (one connection per call) -------------------------------

    def consume(self, handler: Handler, stop: threading.Event) -> None:
        self._consume(self.queue, handler, stop, self._attempts)

    def consume_dead(self, handler: Handler, stop: threading.Event) -> None:
        self._consume(self.dead_queue, handler, stop, self._dead_attempts)

    @staticmethod
    def _attempts(props: pika.BasicProperties) -> int:
        count = (props.headers or {}).get("x-delivery-count")
        return int(count) + 1 if count is not None else 1

    def _dead_attempts(self, props: pika.BasicProperties) -> int:
        headers = props.headers or {}
        deaths = headers.get("x-death") or [{}]
        reason = headers.get("x-first-death-reason") or deaths[0].get("reason")
        if isinstance(reason, bytes):
            reason = reason.decode()
        if reason == "delivery_limit":
            return self.delivery_limit + 1
        return max(1, int(deaths[0].get("count") or 1))

    def _consume(
        self,
        queue: str,
        handler: Handler,
        stop: threading.Event,
        attempts_of: Callable[[pika.BasicProperties], int],
    ) -> None:
        backoff = _BACKOFF_START
        while not stop.is_set():
            conn: pika.BlockingConnection | None = None
            try:
                conn = self._connect("consumer" if queue == self.queue else "dead-consumer")
                chan = self._open_channel(conn)
                chan.basic_qos(prefetch_count=1)
                backoff = _BACKOFF_START
                self._serve(conn, chan, queue, handler, stop, attempts_of)
                return
            except _RECONNECT as exc:
                if stop.is_set():
                    return
                log.warning("consumer of %s at %s: %s; reconnecting in %.1f s",
                            queue, self._where, _describe(exc), backoff)
                stop.wait(backoff)
                backoff = min(2 * backoff, _BACKOFF_MAX)
            finally:
                _close_quietly(conn)

    def _serve(
        self,
        conn: pika.BlockingConnection,
        chan: BlockingChannel,
        queue: str,
        handler: Handler,
        stop: threading.Event,
        attempts_of: Callable[[pika.BasicProperties], int],
    ) -> None:
        """Handle messages until stop is set (returns) or the connection breaks (raises)."""
        for method, props, body in chan.consume(queue, inactivity_timeout=_POLL):
            if stop.is_set():
                chan.cancel()  # puts back a message that arrived meanwhile, if any
                return
            if method is None:
                continue
            tag = method.delivery_tag
            try:
                task = FileTask.from_bytes(body)
            except Exception as exc:
                log.error("dropping a message from %s that is not a FileTask (%s): %.200r",
                          queue, _describe(exc), body)
                chan.basic_ack(tag)
                continue
            verdict = self._run(conn, handler, task, attempts_of(props))
            if stop.is_set():
                # Cancel before settling: with prefetch 1 nothing else can be in flight
                # yet, so no message is delivered (and counted) only to be returned.
                chan.cancel()
            if verdict is Verdict.ACK:
                chan.basic_ack(tag)
            else:
                chan.basic_nack(tag, requeue=True)
            if stop.is_set():
                return
        raise pika.exceptions.ConsumerCancelled(f"RabbitMQ cancelled the consumer of {queue}")

    def _run(
        self, conn: pika.BlockingConnection, handler: Handler, task: FileTask, attempts: int
    ) -> Verdict:
        """Run handler in its own thread while this one keeps the connection (heartbeats) alive."""
        done = threading.Event()
        verdicts: list[Verdict] = []

        def work() -> None:
            verdict = Verdict.REQUEUE
            try:
                verdict = call_handler(handler, task, attempts)
            finally:
                verdicts.append(verdict)
                done.set()
                try:
                    conn.add_callback_threadsafe(lambda: None)  # wake the I/O thread now
                except Exception:  # connection already gone: the I/O thread notices
                    pass

        name = f"broker-handler-{task.request_id}-{task.file_id}"
        threading.Thread(target=work, name=name, daemon=True).start()
        try:
            while not done.is_set():
                conn.process_data_events(time_limit=_POLL)
        except _RETRYABLE as exc:
            log.warning("connection lost while handling %s file %d (%s); RabbitMQ will "
                        "redeliver it, this run's verdict is dropped once it finishes",
                        task.request_id, task.file_id, _describe(exc))
            done.wait()  # delivery tags die with their channel: never settle on a new one
            raise _ConnectionLost(_describe(exc)) from exc
        return verdicts[0]

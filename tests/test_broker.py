"""The broker contract, checked on both backends: the embedded MemoryBroker and a real RabbitMQ.

RabbitMQ is expected at ``DELIVERY_TEST_AMQP_URL`` (default the local guest
account); when unreachable the RabbitMQ cases are skipped, or fail under
``CI=true``. Every test uses its own queue names and deletes them afterwards.
"""

from __future__ import annotations

import os
import queue as queue_module
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from servers import free_port, skip_or_fail

from delivery.broker import open_broker
from delivery.broker.base import Broker, Handler, Verdict
from delivery.broker.memory import MemoryBroker
from delivery.errors import TransientError
from delivery.messages import FileTask

if TYPE_CHECKING:
    from delivery.broker.rabbitmq import RabbitBroker

AMQP_URL = os.environ.get("DELIVERY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REPO = Path(__file__).resolve().parents[1]

BrokerFactory = Callable[..., Broker]


def make_tasks(n: int, request_id: str = "req-1") -> list[FileTask]:
    return [FileTask(request_id, i, (f"root://eos.example//f{i}.root",), '{"x":1}', "parquet")
            for i in range(n)]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def start(target: Callable[[Handler, threading.Event], None], handler: Handler,
          stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=target, args=(handler, stop), daemon=True)
    thread.start()
    return thread


def finish(thread: threading.Thread, stop: threading.Event, timeout: float = 5.0) -> None:
    stop.set()
    thread.join(timeout)
    assert not thread.is_alive(), "consumer did not return after stop"


# -- RabbitMQ plumbing -------------------------------------------------------


def _admin() -> Any:
    """A plain pika connection for setup and cleanup."""
    import pika

    params = pika.URLParameters(AMQP_URL)
    params.connection_attempts, params.socket_timeout = 1, 3
    return pika.BlockingConnection(params)


@pytest.fixture(scope="session")
def rabbit_up() -> None:
    try:
        _admin().close()
    except Exception as exc:
        skip_or_fail(f"RabbitMQ not reachable at {AMQP_URL.split('@')[-1]}: {exc!r}")


def delete_queues(name: str) -> None:
    conn = _admin()
    try:
        chan = conn.channel()
        for q in (name, f"{name}.dead"):
            chan.queue_delete(q)
        chan.exchange_delete(f"{name}.dead")
    finally:
        conn.close()


@pytest.fixture
def queue_name(rabbit_up: None) -> Iterator[str]:
    name = f"test.{uuid.uuid4().hex}"
    yield name
    delete_queues(name)


@pytest.fixture(params=["memory", "rabbitmq"])
def make_broker(request: pytest.FixtureRequest) -> Iterator[BrokerFactory]:
    """A factory: make_broker(delivery_limit=3, heartbeat=30) on this test's own queue."""
    made: list[Broker] = []
    if request.param == "memory":
        def factory(delivery_limit: int = 3, heartbeat: int = 30) -> Broker:
            made.append(MemoryBroker(delivery_limit))
            return made[-1]
        yield factory
        return
    name = request.getfixturevalue("queue_name")

    def rabbit(delivery_limit: int = 3, heartbeat: int = 30) -> Broker:
        from delivery.broker.rabbitmq import RabbitBroker

        made.append(RabbitBroker(AMQP_URL, queue=name, delivery_limit=delivery_limit,
                                 heartbeat=heartbeat))
        return made[-1]

    yield rabbit
    for broker in made:
        broker.close()


# -- the contract, on both backends ------------------------------------------


def test_open_broker_picks_backend() -> None:
    assert isinstance(open_broker(None, "q"), MemoryBroker)
    rabbit = open_broker("amqp://guest:secret@127.0.0.1:5672/%2F", "q", delivery_limit=5)
    assert type(rabbit).__name__ == "RabbitBroker" and rabbit.delivery_limit == 5
    with pytest.raises(ValueError, match="scheme 'redis'") as info:
        open_broker("redis://user:secret@host/0", "q")
    assert "secret" not in str(info.value)


def test_each_task_delivered_once(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    broker.publish(make_tasks(20))
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        seen.append((task.file_id, attempts))
        if len(seen) == 20:
            stop.set()
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    wait_until(stop.is_set, 20, "20 deliveries")
    finish(thread, stop)
    assert sorted(seen) == [(i, 1) for i in range(20)]
    assert broker.depth() == 0 and broker.dead_depth() == 0


@pytest.mark.parametrize("failure", ["requeue", "raise"])
def test_failed_delivery_comes_back(make_broker: BrokerFactory, failure: str) -> None:
    broker = make_broker()
    broker.publish(make_tasks(1))
    seen: list[int] = []
    stop = threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        seen.append(attempts)
        if attempts == 1:
            if failure == "raise":
                raise RuntimeError("worker blew up")
            return Verdict.REQUEUE
        stop.set()
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    wait_until(stop.is_set, 10, "the redelivery")
    finish(thread, stop)
    assert seen == [1, 2]
    assert broker.depth() == 0 and broker.dead_depth() == 0


def test_delivery_limit_dead_letters(make_broker: BrokerFactory) -> None:
    broker = make_broker(delivery_limit=2)
    broker.publish(make_tasks(1))
    seen: list[int] = []
    stop = threading.Event()

    def always_fail(task: FileTask, attempts: int) -> Verdict:
        seen.append(attempts)
        return Verdict.REQUEUE

    thread = start(broker.consume, always_fail, stop)
    wait_until(lambda: broker.dead_depth() == 1, 10, "the dead letter")
    finish(thread, stop)
    # Like x-delivery-limit: `limit` returns allowed, so limit + 1 deliveries.
    assert seen == [1, 2, 3]
    assert broker.depth() == 0

    dead: list[tuple[int, int]] = []
    dead_stop = threading.Event()

    def record(task: FileTask, attempts: int) -> Verdict:
        dead.append((task.file_id, attempts))
        dead_stop.set()
        return Verdict.ACK

    thread = start(broker.consume_dead, record, dead_stop)
    wait_until(dead_stop.is_set, 10, "the dead-letter handler")
    finish(thread, dead_stop)
    assert dead == [(0, 3)]
    assert broker.dead_depth() == 0


def test_stop_ends_idle_consume_promptly(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    stop = threading.Event()
    thread = start(broker.consume, lambda task, attempts: Verdict.ACK, stop)
    time.sleep(1.0)
    began = time.monotonic()
    finish(thread, stop, timeout=3.0)
    assert time.monotonic() - began < 3.0
    thread = start(broker.consume_dead, lambda task, attempts: Verdict.ACK, stop)
    thread.join(3.0)  # stop already set: returns at once
    assert not thread.is_alive()


def test_stop_returns_after_current_task(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    broker.publish(make_tasks(2))
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        stop.set()  # e.g. SIGTERM arrives while the file is being processed
        time.sleep(1.0)
        seen.append((task.file_id, attempts))
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    wait_until(stop.is_set, 10, "the first delivery")
    thread.join(5.0)
    assert not thread.is_alive() and seen == [(0, 1)]
    wait_until(lambda: broker.depth() == 1, 5, "the second task waiting")
    # The second task was never handed out, so it has not used up an attempt.
    again = threading.Event()

    def second(task: FileTask, attempts: int) -> Verdict:
        seen.append((task.file_id, attempts))
        again.set()
        return Verdict.ACK

    thread = start(broker.consume, second, again)
    wait_until(again.is_set, 10, "the second task")
    finish(thread, again)
    assert seen == [(0, 1), (1, 1)]


def test_two_consumers_split_the_work(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    broker.publish(make_tasks(30))
    lock = threading.Lock()
    seen: list[tuple[str, int, int]] = []
    stop = threading.Event()

    def handler_for(consumer: str) -> Handler:
        def handler(task: FileTask, attempts: int) -> Verdict:
            time.sleep(0.02)
            with lock:
                seen.append((consumer, task.file_id, attempts))
                if len(seen) >= 30:
                    stop.set()
            return Verdict.ACK
        return handler

    threads = [start(broker.consume, handler_for(c), stop) for c in ("a", "b")]
    wait_until(stop.is_set, 20, "30 deliveries")
    for thread in threads:
        finish(thread, stop)
    assert sorted(file_id for _, file_id, _ in seen) == list(range(30))  # none twice
    assert {attempts for _, _, attempts in seen} == {1}
    by_consumer = {name for name, _, _ in seen}
    assert len(by_consumer) == 2, f"one consumer did everything: {by_consumer}"


def test_depth_counts_waiting_tasks_only(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    broker.publish(make_tasks(3))
    release, stop, busy = threading.Event(), threading.Event(), threading.Event()
    done: list[int] = []

    def handler(task: FileTask, attempts: int) -> Verdict:
        busy.set()
        release.wait(10)
        done.append(task.file_id)
        if len(done) == 3:
            stop.set()
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    wait_until(busy.is_set, 10, "the first delivery")
    wait_until(lambda: broker.depth() == 2, 5, "depth 2 with one task in flight")
    release.set()
    wait_until(stop.is_set, 10, "all three tasks")
    finish(thread, stop)
    assert broker.depth() == 0


# -- RabbitMQ only ---------------------------------------------------------------


def rabbit(queue: str, **kwargs: int) -> RabbitBroker:
    from delivery.broker.rabbitmq import RabbitBroker

    return RabbitBroker(AMQP_URL, queue=queue, **kwargs)


def test_rabbit_topology(queue_name: str) -> None:
    broker = rabbit(queue_name, delivery_limit=4)
    assert broker.depth() == 0  # declares
    conn = _admin()
    try:
        chan = conn.channel()
        # Redeclaring with the same arguments is fine; anything else is PRECONDITION_FAILED.
        chan.queue_declare(queue_name, durable=True, arguments={
            "x-queue-type": "quorum", "x-delivery-limit": 4,
            "x-dead-letter-exchange": f"{queue_name}.dead",
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        chan.queue_declare(f"{queue_name}.dead", durable=True,
                           arguments={"x-queue-type": "quorum"})
    finally:
        conn.close()
    with pytest.raises(RuntimeError, match="delivery limit"):
        rabbit(queue_name, delivery_limit=3).depth()
    broker.delete_queues()
    other = rabbit(queue_name, delivery_limit=3)
    assert other.depth() == 0  # gone, so declared afresh with the new limit
    other.close()


def test_rabbit_bad_message_is_dropped(queue_name: str) -> None:
    broker = rabbit(queue_name)
    broker.depth()  # declare the queues
    conn = _admin()
    try:
        chan = conn.channel()
        chan.confirm_delivery()
        chan.basic_publish("", queue_name, b"this is not JSON")
        chan.basic_publish("", queue_name, b'{"request_id": "r"}')
    finally:
        conn.close()
    broker.publish(make_tasks(1))
    seen: list[int] = []
    stop = threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        seen.append(task.file_id)
        stop.set()
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    wait_until(stop.is_set, 10, "the good task")
    finish(thread, stop)
    assert seen == [0]
    assert broker.depth() == 0 and broker.dead_depth() == 0
    broker.close()


def test_rabbit_long_handler_keeps_connection(queue_name: str) -> None:
    broker = rabbit(queue_name, heartbeat=2)
    broker.publish(make_tasks(2))
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        if task.file_id == 0:
            time.sleep(7.0)  # > 2 heartbeat intervals without touching the connection
        seen.append((task.file_id, attempts))
        if len(seen) == 2:
            stop.set()
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    wait_until(stop.is_set, 20, "both tasks")
    finish(thread, stop)
    assert seen == [(0, 1), (1, 1)]  # no redelivery: the ack landed on a live connection
    assert broker.depth() == 0
    broker.close()


def test_rabbit_dead_broker_is_transient() -> None:
    from delivery.broker.rabbitmq import RabbitBroker

    broker = RabbitBroker(f"amqp://guest:secret@127.0.0.1:{free_port()}/%2F", queue="nowhere")
    began = time.monotonic()
    with pytest.raises(TransientError, match="broker unavailable") as info:
        broker.publish(make_tasks(1))
    assert time.monotonic() - began < 3.0
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TransientError):
        broker.depth()


def require_local_rabbitmqctl() -> None:
    """The broker-side tests drive the local node with rabbitmqctl."""
    import pika

    if shutil.which("rabbitmqctl") is None:
        skip_or_fail("rabbitmqctl not found: cannot act on RabbitMQ from the broker side")
    if pika.URLParameters(AMQP_URL).host not in ("127.0.0.1", "localhost"):
        pytest.skip("rabbitmqctl controls the local node, and the test broker is not local")


def _rabbitmqctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _ensure_rabbit_running() -> None:
    """Bring RabbitMQ back whatever happened; other tests and sessions depend on it."""
    if _rabbitmqctl("start_app").returncode != 0 and _rabbitmqctl("status").returncode != 0:
        subprocess.run(["rabbitmq-server", "-detached"], check=False, timeout=60)
    _rabbitmqctl("await_startup", timeout=180)
    wait_until(_reachable, 60, "RabbitMQ to accept connections again")


def _reachable() -> bool:
    try:
        _admin().close()
        return True
    except Exception:
        return False


@pytest.mark.slow
def test_rabbit_consumer_survives_broker_restart(queue_name: str) -> None:
    require_local_rabbitmqctl()
    broker = rabbit(queue_name)
    broker.publish(make_tasks(1))
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        seen.append((task.file_id, attempts))
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    try:
        wait_until(lambda: len(seen) == 1, 10, "the first task")
        try:
            stopped = _rabbitmqctl("stop_app")
            assert stopped.returncode == 0, stopped.stderr
            time.sleep(1.0)
        finally:
            _ensure_rabbit_running()
        # Publishing reconnects lazily; the quorum queue may need a moment for its leader.
        task = FileTask("req-1", 1, ("root://eos.example//f1.root",), '{"x":1}', "parquet")
        deadline = time.monotonic() + 30
        while True:
            try:
                broker.publish([task])
                break
            except TransientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        wait_until(lambda: len(seen) == 2, 30, "the consumer to reconnect and take task 1")
    finally:
        finish(thread, stop, timeout=10)
        broker.close()
    assert seen == [(0, 1), (1, 1)]


def _close_connections(name_part: str) -> int:
    """Have RabbitMQ close the connections whose client-provided name contains name_part."""
    listed = _rabbitmqctl("list_connections", "--no-table-headers", "--quiet",
                          "pid", "client_properties", timeout=30)
    pids = [line.split()[0] for line in listed.stdout.splitlines() if name_part in line]
    for pid in pids:
        _rabbitmqctl("close_connection", pid, "test: connection lost", timeout=30)
    return len(pids)


def test_rabbit_connection_lost_mid_handler(queue_name: str) -> None:
    require_local_rabbitmqctl()
    broker = rabbit(queue_name)
    broker.publish(make_tasks(1))
    seen: list[tuple[int, int]] = []
    stop, busy = threading.Event(), threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        seen.append((task.file_id, attempts))
        if attempts == 1:
            busy.set()
            time.sleep(4.0)  # the connection is closed meanwhile
        else:
            stop.set()
        return Verdict.ACK  # for attempt 1 this verdict must be dropped, not acked

    thread = start(broker.consume, handler, stop)
    try:
        wait_until(busy.is_set, 10, "the first delivery")
        assert _close_connections(f"consumer {queue_name}") == 1
        wait_until(stop.is_set, 20, "the redelivery after the reconnect")
    finally:
        finish(thread, stop)
        broker.close()
    assert seen == [(0, 1), (0, 2)]
    assert broker.depth() == 0 and broker.dead_depth() == 0


_KILLABLE_CONSUMER = """
import sys, threading, time
from delivery.broker.base import Verdict
from delivery.broker.rabbitmq import RabbitBroker

def handler(task, attempts):
    print(f"started {task.file_id} {attempts}", flush=True)
    time.sleep(600)
    return Verdict.ACK

RabbitBroker(sys.argv[1], queue=sys.argv[2]).consume(handler, threading.Event())
"""


def test_rabbit_killed_consumer_task_is_redelivered(queue_name: str) -> None:
    broker = rabbit(queue_name)
    broker.publish(make_tasks(1))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE_CONSUMER, AMQP_URL, queue_name],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines: queue_module.Queue[str] = queue_module.Queue()

    def read() -> None:
        for line in proc.stdout or []:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert lines.get(timeout=20).strip() == "started 0 1"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def handler(task: FileTask, attempts: int) -> Verdict:
        seen.append((task.file_id, attempts))
        stop.set()
        return Verdict.ACK

    thread = start(broker.consume, handler, stop)
    wait_until(stop.is_set, 10, "the redelivery")
    finish(thread, stop)
    assert seen == [(0, 2)]
    broker.close()

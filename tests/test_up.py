"""``delivery up`` as a person runs it: a subprocess against the real services.

RabbitMQ (a unique queue), S3 (moto_server) and a fresh PostgreSQL database, as
in ``tests/stack.py``; ``delivery up --workers 2`` serves a request submitted
with the client library, restarts a worker SIGKILLed behind its back, and stops
on SIGINT with exit 0 and no process left. Services that do not answer give one
line each and a non-zero exit, with no password printed. Without a broker, ``up``
is the embedded default.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from servers import free_port
from stack import REPO, _postgres_database, _rabbit_or_skip

from delivery.broker.rabbitmq import RabbitBroker
from delivery.client import Client, Query
from delivery.objects.s3 import S3Store
from transformers.generate import generate

pytestmark = pytest.mark.integration

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUERY = Query("Events").columns("MET_pt", "Muon_pt").where("count(Muon_pt > 20) >= 1")
STARTED = re.compile(r"(worker-\d+|api) started \(pid (\d+)\)")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("up-inputs")
    for i in range(3):
        generate(root / f"nano{i}.root", 20_000, seed=i, basket_entries=5000)
    return root


def _env(state: Path, roots: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env.update({"DELIVERY_STATE_DIR": str(state), "DELIVERY_ALLOWED_ROOTS": str(roots),
                "DELIVERY_LOG_FORMAT": "text", "PYTHONPATH": str(REPO), **settings})
    return env


def _real_env(state: Path, roots: Path, database: str, s3_endpoint: str) -> dict[str, str]:
    return _env(state, roots, DELIVERY_DATABASE_URL=database, DELIVERY_BROKER_URL=BROKER,
                DELIVERY_QUEUE=f"test.up.{uuid.uuid4().hex}",
                DELIVERY_S3_ENDPOINT=s3_endpoint.split("://", 1)[1],
                DELIVERY_S3_ACCESS_KEY="writer", DELIVERY_S3_SECRET_KEY="writer-secret-42")


class Up:
    """``delivery up`` in a subprocess; its output collected line by line."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "delivery", "up", "--workers", str(workers),
             "--port", str(self.port), "--grace", "60"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if found := re.search(pattern, line):
                    return found
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.text())

    def started(self) -> dict[str, list[int]]:
        """Every pid each child name had, in order."""
        found: dict[str, list[int]] = {}
        for line in list(self.lines):
            if match := STARTED.search(line):
                found.setdefault(match[1], []).append(int(match[2]))
        return found

    def text(self) -> str:
        return "\n".join(self.lines[-80:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _alive(pid: int) -> bool:
    """True if ``pid`` is a live process (not a zombie); pids are not reused this fast."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def real_env(tmp_path: Path, data_dir: Path, s3_endpoint: str) -> Iterator[dict[str, str]]:
    _rabbit_or_skip(BROKER)
    with _postgres_database() as database:
        env = _real_env(tmp_path / "state", data_dir, database, s3_endpoint)
        yield env
        RabbitBroker(BROKER, env["DELIVERY_QUEUE"]).delete_queues()


def test_up_serves_restarts_a_dead_worker_and_stops_cleanly(
        real_env: dict[str, str], data_dir: Path, s3_endpoint: str) -> None:
    up = Up(real_env, workers=2)
    try:
        up.wait_for(r"up \| ready: API on http://127\.0\.0\.1:\d+, 2 worker", timeout=90)
        up.wait_for(r"worker-2 \| worker consuming", timeout=60)
        files = sorted(str(p) for p in data_dir.glob("nano*.root"))
        with Client(up.url) as client:
            request_id = client.submit({"Name": "up", "Dataset": files, "Query": QUERY})
            items = list(client.follow(request_id, deadline=120))
            assert client.status(request_id)["status"] == "Complete"
        assert sorted(i["file-path"] for i in items) == files
        assert all(i["transform_status"] == "success" for i in items)
        store = S3Store(real_env["DELIVERY_S3_ENDPOINT"], "writer", "writer-secret-42")
        assert len(store.list(request_id)) == len(files)

        victim = up.started()["worker-1"][-1]
        mark = len(up.lines)
        os.kill(victim, signal.SIGKILL)
        up.wait_for(rf"worker-1 \(pid {victim}\) was killed by SIGKILL .* restarting in 1 s",
                    timeout=20, start=mark)
        up.wait_for(r"worker-1 started \(pid \d+\)", timeout=20, start=mark)
        replacement = up.started()["worker-1"][-1]
        assert replacement != victim and _alive(replacement)
        assert psutil.Process(replacement).ppid() == up.proc.pid  # a child of the supervisor

        children = [pid for pids in up.started().values() for pid in pids]
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=90) == 0, up.text()
        up.reader.join(timeout=10)
        assert up.lines[-1].endswith("up | stopped"), up.text()
        assert not [pid for pid in children if _alive(pid)], up.text()
        # Nothing secret was printed: not the generated token, not the S3 secret.
        assert "writer-secret-42" not in "\n".join(up.lines)
    finally:
        up.stop()


def test_children_follow_a_killed_supervisor(tmp_path: Path, data_dir: Path) -> None:
    """SIGKILL leaves up no time to clean up: the kernel's SIGTERM takes its children."""
    _rabbit_or_skip(BROKER)
    queue = f"test.up.{uuid.uuid4().hex}"
    env = _env(tmp_path / "state", data_dir, DELIVERY_BROKER_URL=BROKER, DELIVERY_QUEUE=queue,
               DELIVERY_DATABASE_URL=f"sqlite:///{tmp_path / 'd.db'}")
    up = Up(env, workers=1)
    try:
        up.wait_for(r"worker-1 \| worker consuming", timeout=90)
        children = [pid for pids in up.started().values() for pid in pids]
        up.proc.kill()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)], up.text()
    finally:
        up.stop()
        RabbitBroker(BROKER, queue).delete_queues()


def _run_up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "delivery", "up", "--workers", "1",
                           "--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_up_names_each_service_that_does_not_answer(tmp_path: Path, data_dir: Path,
                                                   s3_endpoint: str) -> None:
    closed = free_port()
    good_db = f"sqlite:///{tmp_path / 'ok.db'}"
    cases = {
        "broker": (dict(DELIVERY_BROKER_URL=f"amqp://guest:hunter2x@127.0.0.1:{closed}/%2F"),
                   rf"^error: broker amqp://guest:\*\*\*@127\.0\.0\.1:{closed}/%2F does not "
                   r"answer: connection refused$"),
        "s3": (dict(DELIVERY_S3_ENDPOINT=f"127.0.0.1:{closed}"),
               rf"^error: S3 http://127\.0\.0\.1:{closed} does not answer: connection refused$"),
        "database": (dict(DELIVERY_DATABASE_URL="postgresql://postgres:hunter2x@127.0.0.1:"
                                                f"{closed}/nope"),
                     rf"^error: database postgresql://postgres:\*\*\*@127\.0\.0\.1:{closed}/nope "
                     r"does not answer: connection refused$"),
    }
    for name, (settings, expected) in cases.items():
        env = _env(tmp_path / name, data_dir, **{"DELIVERY_DATABASE_URL": good_db, **settings})
        done = _run_up(env)
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        assert done.stdout == "", (name, done.stdout)  # nothing was started
        assert re.fullmatch(expected, done.stderr.strip()), (name, done.stderr)
        assert "hunter2x" not in done.stderr
    # All three at once: one line each, in a fixed order, within the short time-out.
    everything = {k: v for settings, _ in cases.values() for k, v in settings.items()}
    started = time.monotonic()
    done = _run_up(_env(tmp_path / "all", data_dir, **everything))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and [line.split()[1] for line in lines] == \
        ["broker", "S3", "database"], done.stderr
    assert time.monotonic() - started < 30


def test_up_without_a_broker_is_the_embedded_default(tmp_path: Path, data_dir: Path) -> None:
    up = Up(_env(tmp_path / "state", data_dir), workers=1)
    try:
        up.wait_for(r"delivery serving on http://127\.0\.0\.1:\d+ \(embedded: 1 worker",
                    timeout=60)
        with Client(up.url) as client:
            request_id = client.submit({"Name": "embedded", "Query": QUERY,
                                        "Dataset": [str(data_dir / "nano0.root")]})
            (item,) = list(client.follow(request_id, deadline=120))
            assert item["transform_status"] == "success"
        children = [c.pid for c in psutil.Process(up.proc.pid).children(recursive=True)]
        assert children, "the embedded worker process should be running"
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=60) == 0, up.text()
        # multiprocessing's helpers (the resource tracker) notice the parent is gone
        # only when their pipe closes: give them a moment, then none may be left.
        deadline = time.monotonic() + 15
        while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        up.stop()

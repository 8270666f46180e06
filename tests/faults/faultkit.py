"""The fault suite's tools: a real stack to break, workers to pause and kill, checks.

- :func:`fault_stack`: the real stack of ``tests/stack.py`` (API in this process,
  PostgreSQL, RabbitMQ, S3, ``delivery worker`` subprocesses), but with the
  broker and database chosen by the test (a private RabbitMQ node or PostgreSQL
  server can be stopped without disturbing anyone else) and workers started with
  their own environment and a log file each.
- :class:`Pause`: the worker's test hook ``DELIVERY_TEST_PAUSE_AT`` (see
  ``transformers/testhooks.py``): workers stop at a named point of a file and
  say so, so a test hits an exact window instead of racing the clock.
- :func:`assert_exactly_once`: complete, one result and one stored object per
  input, every recorded size and checksum equal to the stored object's.
- :class:`Inputs`: ``small.root`` (NanoAOD-like, 2,000 events, ~0.1 s to
  transform) and ``big.root`` (four branches of 1.5 M random doubles,
  uncompressed: a 48 MB output, so its upload is multipart and its transform
  lasts long enough to be signalled), linked under new names per test so every
  request has paths and object names of its own while the bytes are made once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack import REPO, Stack, _delete_queues, _http, _postgres_database, _rabbit_or_skip
from test_service import call, submit, wait_final

Worker = subprocess.Popen[bytes]

__all__ = ["Faults", "fault_stack", "Pause", "Inputs", "wait_until", "final",
           "assert_exactly_once", "children", "consumers", "call", "submit", "forget",
           "SHARED_BROKER", "ALL", "LIGHT", "Worker"]

SHARED_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
ALL = json.dumps([{"treename": "Events"}])  # every branch: fits both kinds of input
LIGHT = json.dumps([{"treename": "Events", "filter_name": ["MET_pt", "nMuon"]}])


@dataclass
class Inputs:
    root: Path

    def link(self, kind: str, tag: str, n: int = 1) -> list[Path]:
        """``n`` new names for ``<kind>.root`` (hard links: distinct paths, same bytes)."""
        paths = []
        for i in range(n):
            path = self.root / f"{tag}-{i}.root"
            os.link(self.root / f"{kind}.root", path)
            paths.append(path)
        return paths


def write_random_tree(path: Path, entries: int, branches: int = 4, seed: int = 1) -> None:
    import numpy as np
    import uproot

    rng = np.random.default_rng(seed)
    with uproot.recreate(path, compression=None) as f:
        f["Events"] = {f"b{i}": rng.random(entries) for i in range(branches)}


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 60,
               every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a worker's transform process, while it runs)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def consumers(broker_url: str, queue: str) -> int:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        conn.close()


@dataclass
class Faults:
    """A running stack plus the workers this test started (each with its own log)."""

    stack: Stack
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_of: dict[int, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def broker_url(self) -> str:
        return self.stack.env["DELIVERY_BROKER_URL"]

    @property
    def queue(self) -> str:
        return self.stack.env["DELIVERY_QUEUE"]

    def consumers(self) -> int:
        return consumers(self.broker_url, self.queue)

    def start_worker(self, env: dict[str, str] | None = None, *,
                     ready: bool = True) -> subprocess.Popen[bytes]:
        """A ``delivery worker`` with ``env`` added; waits until it consumes if ``ready``."""
        before = self.consumers() if ready else 0
        log = self.logs / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "delivery", "worker"],
                                    env={**self.stack.env, **(env or {})}, stdout=subprocess.DEVNULL,
                                    stderr=err)
        self.procs.append(proc)
        self.stack.workers.append(proc)
        self.log_of[proc.pid] = log
        if ready:
            wait_until(f"worker {proc.pid} to consume",
                       lambda: self.consumers() > before or proc.poll() is not None,
                       timeout=60, every=0.1)
            assert proc.poll() is None, self.log(proc)
        return proc

    def start_workers(self, n: int, env: dict[str, str] | None = None) -> list[Worker]:
        """``n`` workers started at once; returns when all of them consume."""
        before = self.consumers()
        procs = [self.start_worker(env, ready=False) for _ in range(n)]
        wait_until(f"{n} workers to consume", lambda: self.consumers() >= before + n
                   or any(p.poll() is not None for p in procs), timeout=60, every=0.1)
        assert all(p.poll() is None for p in procs), self.logs_text()
        return procs

    def log(self, proc: subprocess.Popen[bytes] | int) -> str:
        pid = proc if isinstance(proc, int) else proc.pid
        return self.log_of[pid].read_text(errors="replace") if pid in self.log_of else ""

    def logs_text(self) -> str:
        return "\n".join(f"--- worker {p.pid} (exit {p.poll()}):\n{self.log(p)[-4000:]}"
                         for p in self.procs)

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        """Signal ``proc``; SIGKILL it if it still runs after 10 s (e.g. left paused)."""
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.live():
            proc.terminate()
        for proc in self.procs:
            self.stop(proc)


@contextlib.contextmanager
def fault_stack(tmp: Path, roots: list[Path], s3_endpoint: str, *,
                broker_url: str = SHARED_BROKER,
                database_url: str | None = None) -> Iterator[Faults]:
    """The API in this process on the given broker, S3 and database (default: a fresh
    database on the shared PostgreSQL); start workers with :meth:`Faults.start_worker`."""
    from api.serve import build_services, start_background
    from delivery.config import Settings

    _rabbit_or_skip(broker_url)
    with contextlib.ExitStack() as cleanup:
        if database_url is None:
            database_url = cleanup.enter_context(_postgres_database())
        env = {
            "DELIVERY_STATE_DIR": str(tmp / "state"),
            "DELIVERY_DATABASE_URL": database_url,
            "DELIVERY_BROKER_URL": broker_url,
            "DELIVERY_QUEUE": f"test.faults.{uuid.uuid4().hex}",
            "DELIVERY_S3_ENDPOINT": s3_endpoint.split("://", 1)[1],
            "DELIVERY_S3_ACCESS_KEY": "writer", "DELIVERY_S3_SECRET_KEY": "writer-secret",
            "DELIVERY_S3_READ_ACCESS_KEY": "reader",
            "DELIVERY_S3_READ_SECRET_KEY": "reader-secret",
            "DELIVERY_ALLOWED_ROOTS": os.pathsep.join(str(r) for r in roots),
            "DELIVERY_SERVICE_TOKEN": secrets.token_urlsafe(24),
            "DELIVERY_LOG_FORMAT": "text",
        }
        services = build_services(Settings.from_env(env))
        running = start_background(services, 0)
        faults: Faults | None = None
        try:
            with _http(services) as url:
                child_env = {**os.environ, **env, "DELIVERY_API_URL": url,
                             "PYTHONPATH": str(REPO)}
                logs = tmp / "logs"
                logs.mkdir(parents=True, exist_ok=True)
                faults = Faults(Stack(url, services, "real", env=child_env, running=running),
                                logs)
                services.broker.depth()  # declares the queue, so consumers can be counted
                yield faults
        finally:
            if faults is not None:
                faults.stop_all()
            running.close()
            _delete_queues(services.broker)
            services.broker.close()
            services.store.close()


class Pause:
    """Workers started with :attr:`env` stop at ``point`` of each file until :meth:`resume`."""

    def __init__(self, folder: Path, point: str) -> None:
        self.folder = folder
        self.point = point
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {"DELIVERY_TEST_PAUSE_AT": f"{self.point}:{self.folder}"}

    def paused(self) -> dict[int, list[tuple[str, int]]]:
        """``{worker pid: [(request id, file id), ...]}`` of the files paused so far."""
        found: dict[int, list[tuple[str, int]]] = {}
        for marker in self.folder.glob("paused.*"):
            entries = [line.split() for line in marker.read_text().splitlines()]
            done = [(e[0], int(e[1])) for e in entries if len(e) == 2]  # not half-written
            if done:
                found[int(marker.suffix[1:])] = done
        return found

    def wait(self, workers: int = 1, timeout: float = 60) -> dict[int, list[tuple[str, int]]]:
        wait_until(f"{workers} worker(s) paused {self.point}",
                   lambda: len(self.paused()) >= workers, timeout=timeout)
        return self.paused()

    def resume(self) -> None:
        (self.folder / "resume").touch()


def final(faults: Faults, request_id: str, timeout: float = 90) -> dict[str, Any]:
    try:
        return wait_final(faults.stack, request_id, timeout=timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{faults.logs_text()}") from None


def stored_sha256(stack: Stack, request_id: str, key: str) -> str:
    objects = stack.services.objects
    url = objects.download_url(request_id, key)
    if url is None:  # a local result directory (the embedded default)
        return hashlib.sha256(objects.local_path(request_id, key).read_bytes()).hexdigest()
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - our own S3
        return hashlib.sha256(response.read()).hexdigest()


def assert_exactly_once(faults: Faults | Stack, request_id: str,
                        files: list[Path]) -> list[Any]:
    """Complete, nothing failed, one result and one object per input, sizes and sums exact."""
    stack = faults.stack if isinstance(faults, Faults) else faults
    n = len(files)
    try:
        status = wait_final(stack, request_id, timeout=90)
    except AssertionError as err:
        logs = faults.logs_text() if isinstance(faults, Faults) else ""
        raise AssertionError(f"{err}\n{logs}") from None
    assert (status["status"], status["files"], status["files-completed"],
            status["files-failed"], status["files-remaining"]) == ("Complete", n, n, 0, 0), \
        status
    code, answer = call(stack, "GET", f"/servicex/transformation/{request_id}/results")
    assert code == 200
    results = answer["results"]
    assert len(results) == n and len({r["file-id"] for r in results}) == n, results
    assert {r["transform_status"] for r in results} == {"success"}
    assert sorted(Path(r["file-path"]).name for r in results) == sorted(f.name for f in files)
    stored = dict(stack.services.objects.list(request_id))
    assert sorted(stored) == sorted(r["s3-object-name"] for r in results)
    for r in results:
        assert r["total-bytes"] > 0 and stored[r["s3-object-name"]] == r["total-bytes"], r
        assert stored_sha256(stack, request_id, r["s3-object-name"]) == r["sha256"], r
    return list(results)


def forget(faults: Faults, request_id: str) -> None:
    """Delete the request and its outputs (moto keeps objects in memory)."""
    assert call(faults.stack, "DELETE", f"/servicex/transformation/{request_id}")[0] == 200

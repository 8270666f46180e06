"""Fault injection on live stacks: killed workers, poison files, broker and store outages.

No mocks and no hooks in the service: faults are real. A :class:`Reaper` thread
scans ``/proc/<pid>/fd`` of the stack's worker processes every 10 ms and
SIGKILLs the one transforming a given input (it has that input's partial output
open: a worker "mid-file"); RabbitMQ is stopped and started with
``rabbitmqctl``; the S3 endpoint is a ``moto_server`` of this module's own,
killed in the middle of a multipart upload and started again on the same port.

Inputs are one generated NanoAOD-like file (400k events, ZSTD; about 1.3 s to
transform) hard-linked under a distinct name per use, so every request has its
own paths (and object names) while the bytes are generated once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from servers import LOOPBACK, free_port, require_service, skip_or_fail, wait_for_port
from stack import Stack, _http, _postgres_database, embedded_stack, real_stack
from test_service import call, submit, wait_final

from api.store.engine import utcnow
from delivery.objects.s3 import DEFAULT_PART_SIZE
from transformers.generate import generate

pytestmark = pytest.mark.integration

BIG_EVENTS = 400_000
# About 1.3 s per file on one core: long enough to be caught mid-file, small output.
SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_*", "Muon_*", "Jet_*"],
                         "cut": "MET_pt > 60"}])
# No cut: ~70 MB of parquet per file, so an upload lasts long enough to be hit.
HEAVY = json.dumps([{"treename": "Events", "filter_name": ["MET_*", "Muon_*", "Jet_*"]}])
LIGHT = json.dumps([{"treename": "Events", "filter_name": ["MET_pt", "nMuon"]}])
SCAN = 0.01  # seconds between two looks at the workers' open files


# ---------------------------------------------------------------------------
# inputs and stacks
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault-inputs")
    generate(root / "big.root", BIG_EVENTS, codec="ZSTD", seed=7)
    generate(root / "small.root", 2000, seed=3, basket_entries=1000)
    return root


def inputs(data_dir: Path, tag: str, n: int) -> list[Path]:
    """``n`` distinct names for the big file (hard links: no copies, yet distinct paths)."""
    paths = []
    for i in range(n):
        path = data_dir / f"{tag}-{i}.root"
        os.link(data_dir / "big.root", path)
        paths.append(path)
    return paths


_logs: dict[int, deque[str]] = {}


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Read a worker's stderr (its log) so it can never block on a full pipe."""
    lines: deque[str] = deque(maxlen=80)
    _logs[proc.pid] = lines

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if " pika." not in line:  # pika's own INFO lines drown ours
                lines.append(line)

    threading.Thread(target=read, name=f"drain-{proc.pid}", daemon=True).start()


def start_worker(stack: Stack) -> subprocess.Popen[bytes]:
    proc = stack.start_worker()
    _drain(proc)
    return proc


def ensure_workers(stack: Stack, n: int = 2) -> None:
    if stack.kind == "real":
        while len(stack.worker_pids()) < n:
            start_worker(stack)


def worker_logs(stack: Stack) -> str:
    if stack.kind != "real":
        return ""
    return "\n".join(f"--- worker {p.pid} (exit {p.poll()}):\n" + "\n".join(_logs.get(p.pid, []))
                     for p in stack.workers)


@contextlib.contextmanager
def _real(tmp: Path, roots: list[Path], endpoint: str, workers: int = 2) -> Iterator[Stack]:
    with real_stack(tmp, roots, endpoint, workers=0) as s:
        for _ in range(workers):
            start_worker(s)
        yield s


@pytest.fixture(scope="module")
def embedded(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("embedded"), [data_dir]) as s:
        yield s


@pytest.fixture(scope="module")
def real(data_dir: Path, tmp_path_factory: pytest.TempPathFactory,
         s3_endpoint: str) -> Iterator[Stack]:
    with _real(tmp_path_factory.mktemp("real"), [data_dir], s3_endpoint) as s:
        yield s


@pytest.fixture(params=["embedded", "real"])
def stack(request: pytest.FixtureRequest) -> Stack:
    s: Stack = request.getfixturevalue(request.param)
    ensure_workers(s)
    return s


# ---------------------------------------------------------------------------
# watching workers' open files
# ---------------------------------------------------------------------------


def open_files(pid: int) -> dict[str, tuple[int, int]]:
    """``{path: (access mode, offset)}`` of the files process ``pid`` has open.

    The mode (0 read, 1 write, 2 both) and offset are read for scratch outputs
    only (``-1`` for others): a scratch output open for reading is being uploaded.
    """
    found: dict[str, tuple[int, int]] = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("/"):
            continue
        found[target] = (-1, -1)
        if "/delivery-" in target:
            with contextlib.suppress(OSError, ValueError), \
                    open(f"/proc/{pid}/fdinfo/{fd}") as info:
                fields = dict(line.split(":", 1) for line in info if ":" in line)
                found[target] = (int(fields["flags"], 8) & 3, int(fields["pos"]))
    return found


def holds(pid: int, source: str | Path) -> bool:
    """Whether worker ``pid`` is transforming ``source`` right now.

    uproot reopens a local input for its reads, so the input itself is open
    only now and then; the partial output (``.<stem>.<digest>.parquet.<pid>.part``
    in the worker's ``delivery-*`` scratch directory) stays open from the first
    chunk written to the end. Either one counts.
    """
    files = open_files(pid)
    partial = f".{Path(source).stem}."
    return os.path.realpath(source) in files or any(
        "/delivery-" in path and Path(path).name.startswith(partial) for path in files)


class Reaper(threading.Thread):
    """SIGKILLs the worker transforming ``target``: ``times`` times (None: every time).

    The victim is caught once it writes the partial output (about a third into
    the file); ``delay`` lets it work on for a while more. With
    ``replace`` (real stack) every victim is followed by a fresh ``delivery
    worker``; the embedded pool restarts its children itself.
    """

    def __init__(self, stack: Stack, target: Path, *, times: int | None = 1,
                 delay: float = 0.0, replace: bool = True,
                 sig: signal.Signals = signal.SIGKILL) -> None:
        super().__init__(name=f"reaper-{target.name}", daemon=True)
        self.stack = stack
        self.target = os.path.realpath(target)
        self.times = times
        self.delay = delay
        self.replace = replace and stack.kind == "real"
        self.sig = sig
        self.victims: list[int] = []
        self.scratch: set[Path] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and (self.times is None or len(self.victims) < self.times):
            for pid in list(self.stack.worker_pids()):
                scratch = None if pid in self.victims else self._partial(pid)
                if scratch is not None:
                    self._kill(pid, scratch)
                    break
            else:
                time.sleep(SCAN)

    def _partial(self, pid: int) -> Path | None:
        """The scratch directory of ``pid`` if it is writing ``target``'s output."""
        prefix = f".{Path(self.target).stem}."
        for path in open_files(pid):
            if "/delivery-" in path and Path(path).name.startswith(prefix):
                return Path(path).parent
        return None

    def _kill(self, pid: int, scratch: Path) -> None:
        # Killed while it writes the output, so its scratch directory is known: a
        # SIGKILLed worker cannot remove it, and it would stay behind in /tmp.
        if self.delay:
            time.sleep(self.delay)
        if self.sig == signal.SIGKILL:
            self.scratch.add(scratch)
        os.kill(pid, self.sig)
        self.victims.append(pid)
        if self.replace:
            start_worker(self.stack)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def reaping(stack: Stack, target: Path, **kwargs: Any) -> Iterator[Reaper]:
    reaper = Reaper(stack, target, **kwargs)
    reaper.start()
    try:
        yield reaper
    finally:
        reaper.stop()


def wait_until(what: str, predicate: Callable[[], Any], timeout: float,
               every: float = SCAN) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------------------
# shared assertions
# ---------------------------------------------------------------------------


def final(stack: Stack, request_id: str, timeout: float = 120) -> dict[str, Any]:
    try:
        return wait_final(stack, request_id, timeout=timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{worker_logs(stack)}") from None


def assert_exactly_once(stack: Stack, request_id: str, files: list[Path]) -> None:
    """Complete, nothing failed, one result and one object per input, sizes exact."""
    n = len(files)
    status = final(stack, request_id)
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
        assert r["total-bytes"] > 0
        assert stored[r["s3-object-name"]] == r["total-bytes"], r
        assert stack.services.objects.size(request_id, r["s3-object-name"]) == r["total-bytes"]
    events = {r["total-events"] for r in results}  # the same bytes under every name
    assert len(events) == 1 and events.pop() > 0


def forget(stack: Stack, request_id: str) -> None:
    """Delete the request and its outputs (the shared moto server keeps them in memory)."""
    assert call(stack, "DELETE", f"/servicex/transformation/{request_id}")[0] == 200


# ---------------------------------------------------------------------------
# 1. a worker killed mid-file
# ---------------------------------------------------------------------------


def test_worker_killed_mid_file_loses_and_duplicates_nothing(stack: Stack,
                                                             data_dir: Path) -> None:
    files = inputs(data_dir, f"kill-{stack.kind}", 6)
    victim_file = files[1]  # taken at once by the second worker
    before = [p for p in stack.workers if p.poll() is None]
    with reaping(stack, victim_file, times=1, delay=0.1) as reaper:
        request_id = submit(stack, [str(f) for f in files], selection=SELECTION)
        wait_until("the victim to be killed", lambda: reaper.victims, timeout=60)
        assert_exactly_once(stack, request_id, files)
    (victim,) = reaper.victims
    assert victim not in stack.worker_pids()
    if stack.kind == "real":
        (proc,) = [p for p in stack.workers if p.pid == victim]
        assert proc.wait(timeout=10) == -signal.SIGKILL
        survivors = [p for p in before if p.pid != victim]
        assert len(survivors) == len(before) - 1
        assert all(p.poll() is None for p in survivors), worker_logs(stack)
    forget(stack, request_id)


def test_sigterm_finishes_the_current_file_then_exits(real: Stack, data_dir: Path) -> None:
    """SIGTERM mid-file: the worker finishes that file, acks it, and exits cleanly."""
    ensure_workers(real, 2)
    files = inputs(data_dir, "term", 4)
    with reaping(real, files[0], times=1, replace=False, sig=signal.SIGTERM) as reaper:
        request_id = submit(real, [str(f) for f in files], selection=SELECTION)
        wait_until("the worker to get SIGTERM", lambda: reaper.victims, timeout=60)
        (victim,) = reaper.victims
        (proc,) = [p for p in real.workers if p.pid == victim]
        assert proc.wait(timeout=60) == 0, worker_logs(real)
    # Its file was finished and recorded by it (its own log says so), and nothing ran twice.
    assert any(f"file 0 of {request_id} recorded: success" in line
               for line in _logs.get(victim, [])), worker_logs(real)
    assert_exactly_once(real, request_id, files)
    assert not [r for r in call(real, "GET", f"/api/v1/requests/{request_id}/files")[1]["files"]
                if r["transform_status"] != "success"]
    ensure_workers(real, 2)
    forget(real, request_id)


# ---------------------------------------------------------------------------
# 2. a poison file
# ---------------------------------------------------------------------------


def test_poison_file_is_dead_lettered_and_the_request_completes(stack: Stack,
                                                                data_dir: Path) -> None:
    good = inputs(data_dir, f"good-{stack.kind}", 2)
    (poison,) = inputs(data_dir, f"poison-{stack.kind}", 1)
    limit = stack.services.broker.delivery_limit
    with reaping(stack, poison, times=None) as reaper:
        request_id = submit(stack, [str(poison)] + [str(f) for f in good], selection=SELECTION)
        status = final(stack, request_id, timeout=120)
        # Every delivery of the poison file killed its worker: limit L allows L + 1.
        assert len(reaper.victims) == limit + 1, (reaper.victims, worker_logs(stack))
    assert (status["status"], status["files"], status["files-completed"],
            status["files-failed"], status["files-remaining"]) == ("Complete", 3, 2, 1, 0), \
        status
    code, answer = call(stack, "GET", f"/api/v1/requests/{request_id}/files?status=failure")
    assert code == 200
    (failed,) = answer["files"]
    assert failed["file-path"] == str(poison) and failed["file-id"] == 0
    assert failed["transform_status"] == "failure" and failed["s3-object-name"] is None
    error = failed["error"]
    assert f"gave up after {limit + 1} deliveries" in error, error
    assert "delivery limit" in error and "dead-letter" in error, error
    code, answer = call(stack, "GET", f"/api/v1/requests/{request_id}/files?status=success")
    assert sorted(r["file-path"] for r in answer["files"]) == sorted(str(f) for f in good)
    stored = dict(stack.services.objects.list(request_id))
    assert sorted(stored) == sorted(r["s3-object-name"] for r in answer["files"])
    assert all(stored[r["s3-object-name"]] == r["total-bytes"] for r in answer["files"])
    assert stack.services.broker.dead_depth() == 0  # the watcher took it off the queue
    forget(stack, request_id)


# ---------------------------------------------------------------------------
# 3. RabbitMQ restarted mid-request
# ---------------------------------------------------------------------------


def _rabbitmqctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _restore_rabbit(url: str) -> None:
    """start_app until the node answers AMQP again (others on this machine share it)."""
    import pika

    deadline = time.monotonic() + 120
    while True:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup", "--timeout", "60")
        try:
            pika.BlockingConnection(pika.URLParameters(url)).close()
            return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_rabbitmq_restart_mid_request(real: Stack, data_dir: Path) -> None:
    require_service("rabbitmqctl", "rabbitmqctl not installed (cannot restart RabbitMQ)")
    if _rabbitmqctl("status", timeout=30).returncode != 0:
        skip_or_fail("rabbitmqctl cannot talk to the local RabbitMQ node")
    ensure_workers(real)
    workers = [p for p in real.workers if p.poll() is None]
    files = inputs(data_dir, "rabbit", 6)
    request_id = submit(real, [str(f) for f in files], selection=SELECTION)

    def in_flight() -> bool:
        done = call(real, "GET", f"/servicex/transformation/{request_id}")[1]["files-completed"]
        return done >= 1 and any(holds(pid, f) for pid in real.worker_pids() for f in files)

    wait_until("a completed file and one in flight", in_flight, timeout=60, every=0.05)
    try:
        stopped = _rabbitmqctl("stop_app")
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(2)
    finally:
        _restore_rabbit(real.env["DELIVERY_BROKER_URL"])
    before = call(real, "GET", f"/servicex/transformation/{request_id}")[1]
    assert before["files-completed"] < len(files), "the outage came too late to matter"
    assert_exactly_once(real, request_id, files)
    # The workers rode the outage out (reconnected) instead of dying.
    assert all(p.poll() is None for p in workers), worker_logs(real)
    assert real.services.broker.dead_depth() == 0
    forget(real, request_id)


# ---------------------------------------------------------------------------
# 4. the S3 endpoint stopped during an upload
# ---------------------------------------------------------------------------


class Moto:
    """A moto_server of our own on a fixed port, to kill and start again."""

    def __init__(self) -> None:
        self.binary = require_service("moto_server",
                                      "moto_server not installed (pip install 'moto[server]')")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-H", LOOPBACK, "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(LOOPBACK, self.port, 30):
            raise RuntimeError(f"moto_server did not listen on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _uploading(stack: Stack, stems: set[str]) -> str | None:
    """The input whose output a worker is uploading, past its first part, if any."""
    for pid in stack.worker_pids():
        for path, (mode, pos) in open_files(pid).items():
            name = Path(path).name
            # Read (mode 0) beyond the first multipart part: that part is on the server
            # and the second one is being read or sent.
            if "/delivery-" in path and name.endswith(".parquet") and mode == 0 \
                    and pos > DEFAULT_PART_SIZE and name.split(".", 1)[0] in stems:
                return name.split(".", 1)[0]
    return None


@pytest.mark.slow
def test_s3_outage_during_upload(data_dir: Path, tmp_path: Path) -> None:
    moto = Moto()
    moto.start()
    try:
        with _real(tmp_path, [data_dir], moto.endpoint) as stack:
            files = inputs(data_dir, "s3out", 4)
            stems = {f.stem for f in files}
            request_id = submit(stack, [str(f) for f in files], selection=HEAVY)
            victim = wait_until("an upload in progress", lambda: _uploading(stack, stems),
                                timeout=90, every=0.005)
            moto.kill()
            down = utcnow()
            time.sleep(4)  # well inside one delivery's retry budget (3 tries with backoff)
            moto.start()
            up = utcnow()
            status = final(stack, request_id, timeout=180)
            n = len(files)
            assert (status["status"], status["files"], status["files-completed"],
                    status["files-failed"]) == ("Complete", n, n, 0), status
            rows = stack.services.store.results(request_id)
            assert len(rows) == n and {r.status for r in rows} == {"success"}
            by_stem = {Path(r.path).stem: r for r in rows}
            # The file whose upload was cut was not reported until S3 was back.
            assert by_stem[victim].created_at > up, (victim, by_stem[victim].created_at, up)
            # Nothing was reported a success while S3 was down (a report that left
            # just before the kill, for an upload finished before it, gets a second).
            grace = down.timestamp() + 1.0
            during = [r for r in rows if grace < r.created_at.timestamp() <= up.timestamp()]
            assert during == [], during
            # moto lost everything at the restart: check what was reported after it.
            after = [r for r in rows if r.created_at > up]
            stored = dict(stack.services.objects.list(request_id))
            assert sorted(stored) == sorted(str(r.object_name) for r in after)
            for r in after:
                assert r.total_bytes > 0 and stored[str(r.object_name)] == r.total_bytes, r
                assert stack.services.objects.size(request_id, str(r.object_name)) == \
                    r.total_bytes
            assert all(p.poll() is None for p in stack.workers), worker_logs(stack)
    finally:
        moto.kill()


# ---------------------------------------------------------------------------
# 5. the broker down at submit
# ---------------------------------------------------------------------------


def test_broker_down_at_submit_is_503_and_leaves_no_request(data_dir: Path, tmp_path: Path,
                                                           s3_endpoint: str) -> None:
    from api.serve import build_services
    from delivery.config import Settings

    port = free_port()  # nothing listens there
    with _postgres_database() as database_url:
        settings = Settings.from_env({
            "DELIVERY_STATE_DIR": str(tmp_path / "state"),
            "DELIVERY_DATABASE_URL": database_url,
            "DELIVERY_BROKER_URL": f"amqp://guest:guest@{LOOPBACK}:{port}/%2F",
            "DELIVERY_QUEUE": f"test.down.{port}",
            "DELIVERY_S3_ENDPOINT": s3_endpoint.split("://", 1)[1],
            "DELIVERY_S3_ACCESS_KEY": "writer", "DELIVERY_S3_SECRET_KEY": "writer-secret",
            "DELIVERY_ALLOWED_ROOTS": str(data_dir),
        })
        services = build_services(settings)
        try:
            with _http(services) as url:
                stack = Stack(url, services, "real")
                body = {"title": "broker down", "selection": LIGHT, "codegen": "uproot-raw",
                        "result-format": "parquet", "file-list": [str(data_dir / "small.root")]}
                for _ in range(2):  # nothing cached between attempts either
                    started = time.monotonic()
                    code, answer = call(stack, "POST", "/servicex/transformation", body)
                    assert code == 503, answer
                    assert time.monotonic() - started < 15
                    assert answer["status"] == 503
                    assert f"broker unavailable at {LOOPBACK}:{port}" in answer["message"]
                    assert "guest" not in answer["message"]  # no credentials in errors
                code, listing = call(stack, "GET", "/servicex/transformation")
                assert code == 200 and listing["requests"] == []
                assert services.store.list_requests() == []
        finally:
            services.broker.close()
            services.store.close()


# ---------------------------------------------------------------------------
# 6. one completion reported many times at once
# ---------------------------------------------------------------------------


def test_concurrent_duplicate_reports_change_nothing(real: Stack, data_dir: Path) -> None:
    ensure_workers(real)
    path = data_dir / "dup-small.root"
    os.link(data_dir / "small.root", path)
    request_id = submit(real, [str(path)], selection=LIGHT)
    status = final(real, request_id)
    assert (status["status"], status["files-completed"], status["files-failed"]) == \
        ("Complete", 1, 0)
    (row,) = real.services.store.results(request_id)
    assert row.status == "success"
    report = {"request_id": request_id, "file_id": row.file_id, "status": row.status,
              "object_name": row.object_name, "total_bytes": row.total_bytes,
              "sha256": row.sha256, "events_in": row.events_in, "events_out": row.events_out,
              "seconds": row.seconds, "error": row.error}
    headers = {"Authorization": f"Bearer {real.env['DELIVERY_SERVICE_TOKEN']}"}

    def post_all(body: dict[str, Any], n: int = 8) -> list[bool]:
        barrier = threading.Barrier(n)

        def one(_: int) -> bool:
            barrier.wait()
            code, answer = call(real, "POST", "/internal/results", body, headers=headers)
            assert code == 200, answer
            return bool(answer["recorded"])

        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))

    def check(expected_seconds: float) -> None:
        code, status = call(real, "GET", f"/servicex/transformation/{request_id}")
        assert (status["status"], status["files"], status["files-completed"],
                status["files-failed"], status["files-remaining"]) == ("Complete", 1, 1, 0, 0)
        (again,) = real.services.store.results(request_id)
        assert (again.id, again.status, again.object_name, again.total_bytes,
                again.created_at) == (row.id, "success", row.object_name, row.total_bytes,
                                      row.created_at)
        assert again.seconds == expected_seconds
        code, answer = call(real, "GET", f"/servicex/transformation/{request_id}/results")
        assert len(answer["results"]) == 1
        later: datetime = row.created_at
        code, answer = call(real, "GET", f"/servicex/transformation/{request_id}/results"
                                          f"?later_than={later.isoformat()}")
        assert answer["results"] == []  # a poller sees no "new" result

    # The very report the worker sent, eight times at once: nothing changes.
    assert post_all(report) == [False] * 8
    check(row.seconds)
    # A redelivered run reports other timings: exactly one of eight writes them.
    rerun = {**report, "seconds": row.seconds + 1.5}
    assert sorted(post_all(rerun)) == [False] * 7 + [True]
    check(row.seconds + 1.5)
    # A late failure of the same file never overrides its success.
    failure = {**report, "status": "failure", "object_name": None, "total_bytes": 0,
               "error": "worker lost"}
    assert post_all(failure) == [False] * 8
    check(row.seconds + 1.5)


def test_internal_endpoint_needs_the_service_token(real: Stack) -> None:
    body = {"request_id": "x", "file_id": 0, "status": "success"}
    assert call(real, "POST", "/internal/results", body)[0] == 401
    code, _ = call(real, "POST", "/internal/results", body,
                   headers={"Authorization": "Bearer wrong"})
    assert code == 403
    token = {"Authorization": f"Bearer {real.env['DELIVERY_SERVICE_TOKEN']}"}
    code, answer = call(real, "POST", "/internal/results", {**body, "file_id": "zero"},
                        headers=token)
    assert code == 400 and "file_id must be an integer" in answer["message"]
    request_id = submit(real, [], did="rucio://nowhere")  # a request with no files
    code, answer = call(real, "POST", "/internal/results",
                        {**body, "request_id": request_id, "file_id": 7}, headers=token)
    assert code == 404 and "has no file 7" in answer["message"]

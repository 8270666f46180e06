"""Load benchmark: many concurrent clients on the real stack, one worker SIGKILLed midway.

    python bench/bench_load.py                    # 50 clients x one 5-file request each
    python bench/bench_load.py --soak 600         # clients keep submitting for 600 s
    python bench/bench_load.py --clients 10 --events 2000   # what tests/test_load.py runs

The real stack of tests/stack.py: RabbitMQ (a unique queue), S3 (moto_server),
PostgreSQL (a fresh database), the API in this process and ``delivery worker``
subprocesses. Each client thread submits requests of the same 5 generated files
(``"reuse": false``: every request is transformed), follows each with the long poll
and checks it. Once half of the expected outputs exist (in soak mode: half of the
duration), one worker caught with a partial output open is SIGKILLed and a new one
started.

Reported: API latency p50/p95/max (every submit, status and results call; the
long poll blocks by design and is not counted), total time, requests and outputs,
and the exactly-once verdict: every request Complete with 5 success rows, 5 stored
objects whose names and sizes match them, nothing failed. Exit status 1 if not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

FILES_PER_REQUEST = 5
SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_pt", "nMuon", "Muon_pt"],
                         "cut": "MET_pt > 5"}])
FINAL = ("Complete", "Fatal", "Canceled", "Bad Dataset")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


@dataclass
class Load:
    """Shared state of one run: latency samples, submitted requests, problems found."""

    url: str
    latencies: list[float] = field(default_factory=list)  # seconds per timed API call
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, method: str, path: str, body: Any = None, timed: bool = True,
             timeout: float = 120) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path}: HTTP {err.code}: {err.read()[:300]!r}") from None
        if timed:
            with self.lock:
                self.latencies.append(time.perf_counter() - t)
        return payload


def one_request(load: Load, files: list[str], stack: Any) -> None:
    """Submit, follow to the end, check exactly-once; problems are recorded, not raised."""
    body = {"title": "load", "selection": SELECTION, "result-format": "parquet",
            "reuse": False, "file-list": files}
    request_id = str(load.call("POST", "/servicex/transformation", body)["request_id"])
    with load.lock:
        load.requests.append(request_id)
    deadline = time.monotonic() + 900
    while True:
        status = load.call("GET", f"/servicex/transformation/{request_id}")
        if status["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            load.problems.append(f"{request_id}: not final after 900 s ({status['status']})")
            return
        load.call("GET", f"/api/v1/requests/{request_id}/wait?timeout=5", timed=False)
    results = load.call("GET", f"/servicex/transformation/{request_id}/results")["results"]
    problem = verify(stack, request_id, status, results, len(files))
    if problem:
        with load.lock:
            load.problems.append(f"{request_id}: {problem}")


def verify(stack: Any, request_id: str, status: dict[str, Any], results: list[Any],
           n: int) -> str | None:
    """Exactly once: Complete, n successes on n files, n stored objects matching them."""
    counts = (status["status"], status["files"], status["files-completed"],
              status["files-failed"], status["files-remaining"])
    if counts != ("Complete", n, n, 0, 0):
        return f"status {counts}"
    if len(results) != n or {r["transform_status"] for r in results} != {"success"} \
            or len({r["file-id"] for r in results}) != n:
        return f"{len(results)} results: {[r['transform_status'] for r in results]}"
    stored = dict(stack.services.objects.list(request_id))
    names = sorted(r["s3-object-name"] for r in results)
    if sorted(stored) != names:
        return f"{len(stored)} stored objects {sorted(stored)} != results {names}"
    wrong = [r["s3-object-name"] for r in results if stored[r["s3-object-name"]] != r["total-bytes"]]
    return f"sizes differ: {wrong}" if wrong else None


def client(load: Load, files: list[str], stack: Any, stop_at: float | None, runs: int) -> None:
    done = 0
    while (stop_at is None and done < runs) or (stop_at is not None and time.monotonic() < stop_at):
        try:
            one_request(load, files, stack)
        except Exception as err:  # noqa: BLE001 - a failed call is a finding, not a crash
            with load.lock:
                load.problems.append(f"client error: {err}")
        done += 1


def start_worker(stack: Any, logs: Path) -> subprocess.Popen[bytes]:
    """A ``delivery worker`` logging to its own file (an unread pipe could fill and stall it)."""
    log = logs / f"worker-{len(stack.workers)}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "delivery", "worker"], env=stack.env,
                                stdout=fh, stderr=subprocess.STDOUT)
    stack.workers.append(proc)
    return proc


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def mid_file(pid: int) -> bool:
    """Whether worker ``pid``, or the child transforming its file, has a partial output
    open in the worker's scratch directory."""
    for holder in (pid, *_children(pid)):
        try:
            fds = os.listdir(f"/proc/{holder}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if "/delivery-" in os.readlink(f"/proc/{holder}/fd/{fd}"):
                    return True
            except OSError:
                continue
    return False


def killer(stack: Any, logs: Path, ready: Any, stop: threading.Event,
           killed: list[tuple[int, float, bool]]) -> None:
    """When ``ready()``, SIGKILL a worker that is mid-file (the first that is, within 10 s),
    then start a replacement."""
    while not stop.is_set() and not ready():
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while not stop.is_set():
        live = [p for p in stack.workers if p.poll() is None]
        busy = [p for p in live if mid_file(p.pid)]
        if busy or (live and time.monotonic() > deadline):
            victim = (busy or live)[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            killed.append((victim.pid, time.monotonic(), bool(busy)))
            start_worker(stack, logs)
            return
        time.sleep(0.01)


def outputs_so_far(stack: Any, requests: list[str]) -> int:
    total = 0
    for request_id in list(requests):
        row = stack.services.store.get(request_id)
        total += row.counts.completed if row is not None else 0
    return total


def run_load(stack: Any, files: list[str], logs: Path, clients: int, runs: int = 1,
             soak: float | None = None, kill: bool = True) -> dict[str, Any]:
    """``clients`` threads each run ``runs`` requests (or until ``soak`` seconds pass)."""
    load = Load(stack.url)
    expected = clients * runs * len(files)
    start = time.monotonic()
    stop_at = start + soak if soak else None
    stop = threading.Event()
    killed: list[tuple[int, float, bool]] = []

    def ready() -> bool:
        if soak:
            return time.monotonic() - start >= soak / 2
        return outputs_so_far(stack, load.requests) >= expected // 2

    reaper = threading.Thread(target=killer, args=(stack, logs, ready, stop, killed), daemon=True)
    if kill:
        reaper.start()
    threads = [threading.Thread(target=client, args=(load, files, stack, stop_at, runs),
                                name=f"client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    stop.set()
    if kill:
        reaper.join(timeout=30)
    outputs = sum(len(dict(stack.services.objects.list(r))) for r in load.requests)
    ms = [v * 1000 for v in load.latencies]
    return {
        "clients": clients, "requests": len(load.requests), "files_per_request": len(files),
        "outputs": outputs, "expected_outputs": len(load.requests) * len(files),
        "seconds": round(seconds, 1), "api_calls": len(ms),
        "api_p50_ms": round(pct(ms, 50), 1), "api_p95_ms": round(pct(ms, 95), 1),
        "api_max_ms": round(max(ms), 1) if ms else None,
        "killed": [pid for pid, _, _ in killed],
        "killed_at_s": [round(t - start, 1) for _, t, _ in killed],
        "killed_mid_file": [busy for _, _, busy in killed],
        "problems": load.problems,
        "exactly_once": not load.problems and outputs == len(load.requests) * len(files),
    }


def make_inputs(folder: Path, events: int) -> list[str]:
    from transformers.generate import generate

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(FILES_PER_REQUEST):
        path = folder / f"load-{events}-{i}.root"
        if not path.exists():
            generate(path, events, codec="ZSTD", seed=100 + i, basket_entries=min(events, 10_000))
        files.append(str(path))
    return files


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--events", type=int, default=20_000, help="events per input file")
    p.add_argument("--soak", type=float, help="keep submitting for this many seconds")
    p.add_argument("--no-kill", action="store_true", help="no SIGKILL midway")
    p.add_argument("--data", default=str(Path(__file__).parent / ".data" / "load"))
    args = p.parse_args()

    import logging

    from bench_service import preflight
    from servers import s3_server
    from stack import real_stack

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    preflight()
    files = make_inputs(Path(args.data), args.events)
    print(f"{args.clients} clients x {FILES_PER_REQUEST}-file requests "
          f"({args.events:,} events per file), {args.workers} workers, "
          + (f"soak {args.soak:.0f} s" if args.soak else "one request per client")
          + f"; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp_name:
        tmp = Path(tmp_name)
        with s3_server() as endpoint, \
                real_stack(tmp, [Path(args.data).resolve()], endpoint, workers=0) as stack:
            for _ in range(args.workers):
                start_worker(stack, tmp)
            report = run_load(stack, files, tmp, args.clients, soak=args.soak,
                              kill=not args.no_kill)
            for request_id in stack.services.store.list_requests():  # moto keeps them in memory
                stack.services.objects.delete_bucket(request_id.request_id)
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))
    print(f"\n{report['requests']} requests, {report['outputs']}/{report['expected_outputs']} "
          f"outputs in {report['seconds']} s; API p50 {report['api_p50_ms']} ms, "
          f"p95 {report['api_p95_ms']} ms, max {report['api_max_ms']} ms over "
          f"{report['api_calls']} calls; worker SIGKILLed at {report['killed_at_s']} s; "
          f"exactly once: {report['exactly_once']}")
    return 0 if report["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

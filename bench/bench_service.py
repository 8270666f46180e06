"""Service benchmark: request latency and whole-request throughput, on the real stack.

    python bench/bench_service.py            # 50 latency requests, 20 files x 100k events
    python bench/bench_service.py --quick    # CI smoke run: 10 requests, 4 files x 20k events

Needs what the integration tests need: RabbitMQ at 127.0.0.1:5672, PostgreSQL at
127.0.0.1:5432 and ``moto_server`` on PATH (see tests/stack.py, tests/servers.py).
Inputs are generated once into bench/.data/service/; every run's state (database,
queue, bucket contents, worker logs) is created fresh and removed at the end.

1. Latency: a warm service (2 ``delivery worker`` processes behind RabbitMQ, S3 via
   moto_server, PostgreSQL) gets single-file requests one after another (a small
   file, two branches, parquet). Per request, client wall time from just before the
   POST to the long-poll response (``/api/v1/requests/<id>/wait``) that first shows
   the file's success row; split into the POST itself and the wait after it. The
   same on the embedded default (SQLite, local directory, in-process broker).
2. Throughput: one request over N files, submit -> Complete, against the engine
   alone (``transformers.run.transform_file`` in a loop, one process, same files,
   selection and format) measured in the same run. Ratio target: service on 2
   workers >= 0.8 x (2 x engine alone).

Every request sends ``"reuse": false``, so each one is transformed (never served
from the output cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

LATENCY_BRANCHES = ["MET_pt", "nMuon"]
BRANCHES = ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge",
            "nJet", "Jet_pt", "Jet_eta", "Jet_btagDeepFlavB", "MET_pt", "MET_phi"]  # fmt: skip
CUT = "count(Muon_pt > 20) >= 1"
FORMAT = "parquet"
FINAL = ("Complete", "Fatal", "Canceled", "Bad Dataset")
LATENCY_TARGET_MS = 300.0
RATIO_TARGET = 0.8


def selection(branches: list[str], cut: str | None = None) -> str:
    sel: dict[str, Any] = {"treename": "Events", "filter_name": branches}
    if cut:
        sel["cut"] = cut
    return json.dumps([sel])


# --------------------------------------------------------------------------- HTTP client


def call(url: str, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{method} {path}: HTTP {err.code}: {err.read()[:500]!r}") from None


def post(url: str, files: list[str], sel: str) -> str:
    body = {"title": "bench", "selection": sel, "codegen": "uproot-raw", "reuse": False,
            "result-destination": "object-store", "result-format": FORMAT, "file-list": files}
    return str(call(url, "POST", "/servicex/transformation", body)["request_id"])


def wait(url: str, request_id: str, after: str | None = None, timeout: float = 30) -> Any:
    query = f"timeout={timeout:g}" + (f"&after={after}" if after else "")
    return call(url, "GET", f"/api/v1/requests/{request_id}/wait?{query}", timeout=timeout + 30)


def until_final(url: str, request_id: str, deadline_s: float = 1800) -> tuple[Any, list[Any]]:
    """Long-poll until the request is final; its status and every result row."""
    deadline = time.monotonic() + deadline_s
    after, results = None, []
    while time.monotonic() < deadline:
        answer = wait(url, request_id, after)
        results += answer["results"]
        if results:
            after = max(r["created_at"] for r in results)
        if answer["status"]["status"] in FINAL:
            return answer["status"], results
    raise SystemExit(f"request {request_id} not final after {deadline_s} s")


def check_ok(status: Any, results: list[Any]) -> None:
    failed = [r for r in results if r["transform_status"] != "success"]
    if status["status"] != "Complete" or failed or status["files-failed"]:
        detail = failed[0]["error"] if failed else status.get("failure-info")
        raise SystemExit(f"request {status['request_id']} ended {status['status']}, "
                         f"{status['files-failed']} failed: {detail}")


# --------------------------------------------------------------------------- measurements


def latency(url: str, path: Path, n: int) -> dict[str, Any]:
    """n single-file requests in sequence: submit -> success row, client wall time."""
    sel = selection(LATENCY_BRANCHES)
    totals, posts, waits, worker = [], [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        request_id = post(url, [str(path)], sel)
        t1 = time.perf_counter()
        while True:
            answer = wait(url, request_id)
            done = [r for r in answer["results"] if r["transform_status"] == "success"]
            if done:
                break
            if answer["status"]["status"] in FINAL or answer["results"]:
                check_ok(answer["status"], answer["results"])
        t2 = time.perf_counter()
        if not done[0]["transform_time"]:
            raise SystemExit(f"request {request_id} was served from the cache, not transformed")
        totals.append(t2 - t0)
        posts.append(t1 - t0)
        waits.append(t2 - t1)
        worker.append(done[0]["transform_time"])
    return {"total": totals, "post": posts, "wait": waits, "worker": worker}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds (user + system) so far: this process, its children by kind, the machine.

    Empty without psutil (the CPU table is then left out).
    """
    try:
        import psutil
    except ImportError:
        return {}
    me = psutil.Process()
    out = {"bench": sum(me.cpu_times()[:2]), "workers": 0.0, "s3": 0.0}
    for child in me.children(recursive=True):
        try:
            kind = "s3" if "moto_server" in " ".join(child.cmdline()) else "workers"
            out[kind] += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    t = psutil.cpu_times()
    out["machine"] = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)  # guest time is already counted in user
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def throughput(url: str, files: list[Path]) -> dict[str, Any]:
    cpu = cpu_snapshot()
    t0 = time.perf_counter()
    request_id = post(url, [str(f) for f in files], selection(BRANCHES, CUT))
    status, results = until_final(url, request_id)
    seconds = time.perf_counter() - t0
    cpu = cpu_delta(cpu, cpu_snapshot())
    check_ok(status, results)
    return {"seconds": seconds, "events_out": sum(r["total-events"] for r in results),
            "bytes_out": sum(r["total-bytes"] for r in results),
            "worker_seconds": sum(r["transform_time"] for r in results), "cpu": cpu}


def best(run: Callable[[], dict[str, Any]], repeat: int) -> dict[str, Any]:
    return min((run() for _ in range(max(repeat, 1))), key=lambda r: r["seconds"])


def engine_child(inputs: list[str], out: str, warm: str) -> None:
    """One process, transform_file over the inputs in a loop (timed after a warm-up)."""
    from delivery.policy import SourcePolicy
    from delivery.selection import parse_selection
    from transformers.run import TransformOptions, transform_file

    sel = parse_selection(json.loads(selection(BRANCHES, CUT)))
    roots = {os.path.dirname(os.path.realpath(p)) for p in [*inputs, warm]}
    policy = SourcePolicy.create([*roots, out])
    options = TransformOptions(format=FORMAT)  # what the worker uses for this format
    transform_file(warm, sel, out, policy=policy, request_id="warm-up", options=options)
    events_out = bytes_out = 0
    cpu = cpu_snapshot()
    t = time.perf_counter()
    for i, path in enumerate(inputs):
        r = transform_file(path, sel, out, policy=policy, request_id=f"engine-{i}",
                           options=options)
        events_out += r.events_out
        bytes_out += r.bytes
    seconds = time.perf_counter() - t
    cpu = cpu_delta(cpu, cpu_snapshot())
    if cpu:  # this process is the one doing the work
        cpu["workers"], cpu["bench"] = cpu["bench"] + cpu["workers"], 0.0
    print(json.dumps({"seconds": seconds, "events_out": events_out, "bytes_out": bytes_out,
                      "cpu": cpu}))


def engine_alone(files: list[Path], warm: Path, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child-engine", "--out", str(out), "--warm", str(warm),
           *map(str, files)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    shutil.rmtree(out, ignore_errors=True)
    if done.returncode:
        raise SystemExit(f"engine alone failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- stacks


def preflight() -> None:
    """Say clearly which server is missing, instead of a pytest skip from tests/stack.py."""
    problems = []
    if shutil.which("moto_server") is None:
        problems.append("moto_server not on PATH (pip install 'moto[server]')")
    try:
        import pika

        pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F")).close()
    except Exception as err:  # noqa: BLE001
        problems.append(f"RabbitMQ at 127.0.0.1:5672: {err!r}")
    try:
        import sqlalchemy as sa
        from stack import PG_ADMIN

        engine = sa.create_engine(PG_ADMIN)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # noqa: BLE001
        problems.append(f"PostgreSQL at 127.0.0.1:5432: {err!r}")
    if problems:
        raise SystemExit("the real stack needs:\n  " + "\n  ".join(problems))


def start_workers(stack: Any, n: int, logs: Path, timeout: float = 60) -> None:
    """``delivery worker`` subprocesses logging to files (a pipe nobody reads could fill
    and stall them); registered on the stack, whose teardown terminates them."""
    paths = []
    for i in range(n):
        log = logs / f"worker-{i}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "delivery", "worker"], env=stack.env,
                                    stdout=fh, stderr=subprocess.STDOUT)
        stack.workers.append(proc)
        paths.append(log)
    deadline = time.monotonic() + timeout
    while not all(b"worker consuming" in p.read_bytes() for p in paths):
        dead = [p for p, w in zip(paths, stack.workers[-n:], strict=True) if w.poll() is not None]
        if dead or time.monotonic() > deadline:
            tail = (dead or paths)[0].read_text(errors="replace")[-2000:]
            raise SystemExit(f"worker did not start:\n{tail}")
        time.sleep(0.05)


@contextlib.contextmanager
def real(tmp: Path, data: Path, workers: int) -> Iterator[str]:
    from servers import s3_server
    from stack import real_stack

    with s3_server() as endpoint, real_stack(tmp, [data], endpoint, workers=0) as stack:
        start_workers(stack, workers, tmp)
        yield stack.url


@contextlib.contextmanager
def embedded(tmp: Path, data: Path, workers: int) -> Iterator[str]:
    from stack import embedded_stack

    with embedded_stack(tmp, [data], workers=workers) as stack:
        yield stack.url


def warm_up(url: str, small: Path, files: list[Path]) -> None:
    """First requests pay connections, imports and first-call costs in every worker."""
    for _ in range(3):
        request_id = post(url, [str(small)], selection(LATENCY_BRANCHES))
        check_ok(*until_final(url, request_id, 300))
    request_id = post(url, [str(f) for f in files[:4]], selection(BRANCHES, CUT))
    check_ok(*until_final(url, request_id, 300))


# --------------------------------------------------------------------------- inputs


def ensure(path: Path, events: int, seed: int) -> Path:
    from transformers.generate import generate

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(path, events, codec="ZSTD", seed=seed, basket_entries=10_000)
    return path


def raw_mb(files: list[Path]) -> float:
    import uproot

    total = 0
    for f in files:
        with uproot.open(f) as root:
            tree = root["Events"]
            total += sum(tree[b].uncompressed_bytes for b in BRANCHES)
    return total / 1e6


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 10 requests, 4 x 20k")
    p.add_argument("--requests", type=int, help="latency requests (default 50; quick 10)")
    p.add_argument("--files", type=int, help="throughput files (default 20; quick 4)")
    p.add_argument("--events", type=int, help="events per throughput file (100k; quick 20k)")
    p.add_argument("--latency-events", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1,
                   help="throughput runs per variant; the fastest is kept")
    p.add_argument("--skip-embedded", action="store_true", help="real stack only")
    p.add_argument("--data", default=str(Path(__file__).parent / ".data"))
    p.add_argument("--child-engine", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--warm", help=argparse.SUPPRESS)
    p.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_engine:
        return engine_child(args.inputs, args.out, args.warm)

    import logging

    # The dev server's access log line per request (to stderr) is noise here.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    n_requests = args.requests or (10 if args.quick else 50)
    n_files = args.files or (4 if args.quick else 20)
    events = args.events or (20_000 if args.quick else 100_000)
    preflight()

    data = Path(args.data).resolve() / "service"
    t = time.perf_counter()
    small = ensure(data / f"latency-{args.latency_events}.root", args.latency_events, 999)
    files = [ensure(data / f"nano-{events}-{i:02d}.root", events, i) for i in range(n_files)]
    generated = time.perf_counter() - t
    mb_raw = raw_mb(files)
    mb_disk = sum(f.stat().st_size for f in files) / 1e6
    total_events = events * n_files

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.system()} {platform.release()}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start (1 min): {load:.2f}"
          + (f"; inputs generated in {generated:.1f} s" if generated > 1 else ""))
    print(f"latency: {n_requests} sequential 1-file requests, {args.latency_events:,} events, "
          f"filter_name {LATENCY_BRANCHES}, {FORMAT}, {args.workers} workers")
    print(f"throughput: {n_files} files x {events:,} events = {mb_disk:.0f} MB on disk, "
          f"{len(BRANCHES)} branches = {mb_raw:.0f} MB uncompressed; cut `{CUT}`; {FORMAT}")

    data.mkdir(parents=True, exist_ok=True)
    lat: dict[str, dict[str, Any]] = {}
    tput: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="run-", dir=data) as tmp_name:
        tmp = Path(tmp_name)
        # The baseline first, with no service running next to it.
        tput["engine alone (1 process)"] = best(
            lambda: engine_alone(files, small, tmp / "engine-out"), args.repeat)
        with real(tmp / "real", data, args.workers) as url:
            warm_up(url, small, files)
            lat["real stack"] = latency(url, small, n_requests)
            tput[f"service, real stack ({args.workers} workers)"] = best(
                lambda: throughput(url, files), args.repeat)
        if not args.skip_embedded:
            with embedded(tmp / "embedded", data, args.workers) as url:
                warm_up(url, small, files)
                lat["embedded default"] = latency(url, small, n_requests)
                tput[f"service, embedded ({args.workers} workers)"] = best(
                    lambda: throughput(url, files), args.repeat)

    print(f"\n## Latency: submit -> success row (ms; {n_requests} requests each; "
          f"target p50 < {LATENCY_TARGET_MS:.0f})\n")
    print("| stack | p50 | p95 | max | POST p50 | POST p95 | wait p50 | worker transform p50 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in lat.items():
        ms = {k: [v * 1000 for v in vals] for k, vals in r.items()}
        print(f"| {name} | {pct(ms['total'], 50):.0f} | {pct(ms['total'], 95):.0f} | "
              f"{max(ms['total']):.0f} | {pct(ms['post'], 50):.1f} | {pct(ms['post'], 95):.1f} | "
              f"{pct(ms['wait'], 50):.0f} | {pct(ms['worker'], 50):.0f} |")
    if "real stack" in lat:
        p50 = pct(lat["real stack"]["total"], 50) * 1000
        verdict = "met" if p50 < LATENCY_TARGET_MS else "NOT met"
        print(f"\nreal stack p50 {p50:.0f} ms: target {verdict}; "
              f"mean {statistics.mean(lat['real stack']['total']) * 1000:.0f} ms")

    base = tput["engine alone (1 process)"]
    base_rate = total_events / base["seconds"]
    print(f"\n## Throughput: {n_files} files x {events:,} events, submit -> Complete\n")
    print("| variant | seconds | events/s | MB/s (uncompressed in) | MB/s (on disk) | out MB "
          "| worker s (sum) | vs 1x engine | vs 2x engine |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in tput.items():
        rate = total_events / r["seconds"]
        worker_s = f"{r['worker_seconds']:.1f}" if "worker_seconds" in r else "-"
        print(f"| {name} | {r['seconds']:.2f} | {rate:,.0f} | {mb_raw / r['seconds']:.0f} | "
              f"{mb_disk / r['seconds']:.0f} | {r['bytes_out'] / 1e6:.1f} | {worker_s} | "
              f"{rate / base_rate:.2f}x | {rate / (2 * base_rate):.2f} |")
        if r["events_out"] != base["events_out"]:
            raise SystemExit(f"{name}: {r['events_out']} events out, engine alone "
                             f"{base['events_out']}")
    if all(r.get("cpu") for r in tput.values()):
        print(f"\n## Where the CPU goes during those runs (CPU seconds; in brackets: cores = "
              f"CPU s / wall s; the machine has {os.cpu_count()})\n")
        print("| variant | engine / workers | bench process (API, client) | moto_server (S3) "
              "| rest of machine (PostgreSQL, RabbitMQ, others) | machine busy |")
        print("|---|---|---|---|---|---|")
        for name, r in tput.items():
            c, wall = r["cpu"], r["seconds"]
            rest = c["machine"] - c["workers"] - c["bench"] - c["s3"]
            cells = [f"{v:.1f} ({v / wall:.2f})" for v in
                     (c["workers"], c["bench"], c["s3"], max(rest, 0.0), c["machine"])]
            print(f"| {name} | " + " | ".join(cells) + " |")
        engine_cpu = base["cpu"]["workers"]
        print("\nworkers' CPU s / the engine alone's CPU s, same events (their per-file "
              "overhead, less sensitive to other load than wall time): " + "; ".join(
            f"{name} {r['cpu']['workers'] / engine_cpu:.2f}"
            for name, r in tput.items() if r is not base))
    key = f"service, real stack ({args.workers} workers)"
    ratio = total_events / tput[key]["seconds"] / (2 * base_rate)
    print(f"\nreal stack / (2 x engine alone) = {ratio:.2f}: target >= {RATIO_TARGET} "
          f"{'met' if ratio >= RATIO_TARGET else 'NOT met'}; {base['events_out']:,} events pass "
          f"the cut; load average at end (1 min): {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

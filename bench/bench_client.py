"""Client benchmark: notebook latency and download-and-load throughput, on the real stack.

    python bench/bench_client.py            # 30 latency runs per client, 20 files x 100k events
    python bench/bench_client.py --quick    # CI smoke run: 5 runs per client, 4 files x 20k

Needs what bench/bench_service.py needs (RabbitMQ at 127.0.0.1:5672, PostgreSQL at
127.0.0.1:5432, ``moto_server`` on PATH) and, for the comparison, the unmodified
``servicex`` client (``pip install 'servicex==3.3.1'``; without it that row is left
out). Inputs are generated once into bench/.data/client/; every run's state
(database, queue, bucket, worker logs, downloads) is created fresh and removed.

1. Latency: a warm real stack (2 ``delivery worker`` processes, RabbitMQ, moto S3,
   PostgreSQL), one small file, three columns. Per run, wall time in this process
   from the call to the ``ak.Array`` in hand: (a) ``delivery.deliver(spec,
   client=Client(url), cache=False, progress=False)``; (b) ``servicex.deliver``
   (3.3.1, same server, same query, ``ignore_local_cache=True``) then
   ``ak.from_parquet`` of the path it returns. Each run's cut threshold differs
   (``MET_pt > -1000 - i``, a cut no event fails), so every request is really
   transformed, never answered from the server's result cache (checked).
2. Throughput (bench/client_throughput.py): 20 files of 100k events delivered and loaded,
   against ``ak.from_parquet`` of the same files on local disk (target >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_service import ensure, pct, preflight, real  # noqa: E402 - after the path
from client_throughput import print_throughput, throughput  # noqa: E402

LATENCY_COLUMNS = ["MET_pt", "nMuon", "Muon_pt"]
LATENCY_TARGET_S = 1.0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


# --------------------------------------------------------------------------- latency


def ours_once(url: str, path: Path, cut: str) -> tuple[Any, str]:
    from delivery import Client, Query, deliver

    spec = {"Sample": [{"Name": "latency", "Dataset": [str(path)],
                        "Query": Query("Events").columns(*LATENCY_COLUMNS).where(cut)}]}
    with Client(url) as client:
        got = deliver(spec, client=client, cache=False, progress=False)
    return got["latency"], got.request_ids["latency"]


def servicex_once(config: Path, path: Path, cut: str) -> tuple[Any, str]:
    import awkward as ak
    import servicex
    from servicex import ProgressBarFormat, dataset, query

    spec = {"General": {"OutputFormat": "parquet", "Delivery": "LocalCache"},
            "Sample": [{"Name": "latency", "Dataset": dataset.FileList([str(path)]),
                        "Query": query.UprootRaw([{"treename": "Events",
                                                   "filter_name": LATENCY_COLUMNS,
                                                   "cut": cut}])}]}
    result = servicex.deliver(spec, config_path=str(config), ignore_local_cache=True,
                              progress_bar=ProgressBarFormat.none)
    paths = list(result["latency"])
    array = ak.from_parquet(paths[0]) if len(paths) == 1 else ak.concatenate(
        [ak.from_parquet(p) for p in paths])
    return array, Path(paths[0]).parent.name  # servicex downloads into <cache>/<request id>/


def latency(url: str, run: Callable[[str], tuple[Any, str]], n: int, offset: int,
            warm: int, expect: int) -> dict[str, Any]:
    """``warm`` untimed runs, then ``n`` timed; each with its own cut, so none is reused."""
    from delivery import Client

    seconds, ids = [], []
    for i in range(warm + n):
        cut = f"MET_pt > {-1000 - offset - i}"
        (array, request_id), s = timed(lambda cut=cut: run(cut))
        if len(array) != expect or sorted(array.fields) != sorted(LATENCY_COLUMNS):
            raise SystemExit(f"{request_id}: {len(array)} events, fields {array.fields}")
        if i >= warm:
            seconds.append(s)
            ids.append(request_id)
    with Client(url) as client:
        reused = [r for r in ids if client.status(r).get("reused-from")]
    if reused:
        raise SystemExit(f"{len(reused)} latency requests were served from the result cache")
    return {"seconds": seconds}


def servicex_config(home: Path, url: str) -> Path | None:
    try:
        import servicex  # noqa: F401
    except ImportError as err:
        print(f"servicex client not installed ({err}): its rows are left out")
        return None
    home.mkdir(parents=True, exist_ok=True)
    path = home / "servicex.yaml"
    path.write_text(f"api_endpoints:\n  - endpoint: {url}\n    name: local\n"
                    f"cache_path: {home / 'cache'}\n")
    return path


# --------------------------------------------------------------------------- main


def machine() -> str:
    mem = ""
    with_meminfo = Path("/proc/meminfo")
    if with_meminfo.exists():
        kb = int(with_meminfo.read_text().split()[1])
        mem = f", {kb / 1e6:.0f} GB RAM"
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
            f"{mem}, Python {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.system()} {platform.release()}")


def versions() -> str:
    import importlib.metadata as md

    found = []
    for name in ("awkward", "pyarrow", "servicex"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            continue
    return ", ".join(found)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 5 runs, 4 x 20k")
    p.add_argument("--runs", type=int, help="timed latency runs per client (30; quick 5)")
    p.add_argument("--warm", type=int, default=3, help="untimed latency runs per client first")
    p.add_argument("--files", type=int, help="throughput files (default 20; quick 4)")
    p.add_argument("--events", type=int, help="events per throughput file (100k; quick 20k)")
    p.add_argument("--latency-events", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5,
                   help="interleaved throughput rounds (each runs every variant once)")
    p.add_argument("--skip-servicex", action="store_true", help="our client only")
    p.add_argument("--skip-latency", action="store_true", help="the throughput part only")
    p.add_argument("--data", default=str(BENCH / ".data"))
    args = p.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    n_runs = args.runs or (5 if args.quick else 30)
    n_files = args.files or (4 if args.quick else 20)
    events = args.events or (20_000 if args.quick else 100_000)
    warm = min(args.warm, 1) if args.quick else args.warm
    preflight()

    data = Path(args.data).resolve() / "client"
    t = time.perf_counter()
    small = ensure(data / f"latency-{args.latency_events}.root", args.latency_events, 999)
    files = [ensure(data / f"nano-{events}-{i:02d}.root", events, i) for i in range(n_files)]
    generated = time.perf_counter() - t

    print(machine())
    print(versions())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start (1 min): {load:.2f}"
          + (f"; inputs generated in {generated:.1f} s" if generated > 1 else ""))
    print(f"stack: real (RabbitMQ, moto_server S3, PostgreSQL, {args.workers} "
          f"`delivery worker` processes), API in this process")

    lat: dict[str, dict[str, Any]] = {}
    data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=data) as tmp_name:
        tmp = Path(tmp_name)
        with real(tmp / "real", data, args.workers) as url:
            if not args.skip_latency:
                lat["ours: delivery.deliver"] = latency(
                    url, lambda cut: ours_once(url, small, cut), n_runs, 0, warm,
                    args.latency_events)
            config = None if args.skip_servicex or args.skip_latency else servicex_config(
                tmp / "sx", url)
            if config is not None:
                lat["servicex 3.3.1: servicex.deliver + ak.from_parquet"] = latency(
                    url, lambda cut: servicex_once(config, small, cut), n_runs, 100_000,
                    warm, args.latency_events)
            tput = throughput(url, files, tmp, args.repeat)

    if lat:
        print_latency(lat, args.latency_events, n_runs, warm)
    print_throughput(tput, n_files, events, args.repeat)


def print_latency(lat: dict[str, dict[str, Any]], n_events: int, n_runs: int,
                  warm: int) -> None:
    print(f"\n## Latency: submit -> ak.Array in this process (s; 1 file x "
          f"{n_events:,} events, {LATENCY_COLUMNS}; {n_runs} runs each after "
          f"{warm} untimed; every run transformed)\n")
    print("| client | p50 | p95 | min | max | mean |")
    print("|---|---|---|---|---|---|")
    for name, r in lat.items():
        s = r["seconds"]
        print(f"| {name} | {pct(s, 50):.3f} | {pct(s, 95):.3f} | {min(s):.3f} | "
              f"{max(s):.3f} | {statistics.mean(s):.3f} |")
    ours = pct(lat["ours: delivery.deliver"]["seconds"], 50)
    print(f"\nours p50 {ours:.3f} s: target < {LATENCY_TARGET_S:g} s "
          f"{'met' if ours < LATENCY_TARGET_S else 'NOT met'}")
    sx = [r for name, r in lat.items() if name.startswith("servicex")]
    if sx:
        theirs = sx[0]["seconds"]
        print(f"servicex / ours: p50 {pct(theirs, 50) / ours:.1f}x, p95 "
              f"{pct(theirs, 95) / pct(lat['ours: delivery.deliver']['seconds'], 95):.1f}x")



if __name__ == "__main__":
    main()

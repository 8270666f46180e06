"""The download-and-load half of bench/bench_client.py (run that script, not this module).

Throughput: one request over N files, transformed once (warm-up). Then
``--repeat`` rounds, each running every variant once, in an order rotated per
round; every result is checked equal to the baseline's array:
- baseline: ``ak.from_parquet`` of the very same output files on local disk,
  concatenated;
- before: the client as it was before the download/load rework (commit
  aa2246e), reproduced here: downloads streamed through httpx then hashed in a
  second pass, files loaded one by one after the last download and joined
  with ``ak.concatenate`` (and the earlier benchmark's variant, loading each
  file in the download thread);
- after: ``deliver()`` itself, reattaching to the completed request through
  its local cache entry (status, one long poll, download x4 straight from the
  presigned URL hashing as it streams, each file read in the pool as it
  lands, one ``ak.from_arrow`` of the joined tables); then ``deliver()`` again
  from the now complete local cache (no HTTP); then ``deliver()`` of the same
  spec with no local cache, which the server answers from its result cache
  (submit + server-side copy + download + load).
Ratios to the baseline are given best-against-best and as the median over
rounds of the ratio within a round (steadier on a shared machine). Target >= 0.8.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COLUMNS = ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge",
           "nJet", "Jet_pt", "Jet_eta", "Jet_btagDeepFlavB", "MET_pt", "MET_phi"]  # fmt: skip
RATIO_TARGET = 0.8
DOWNLOAD_WORKERS = 4  # deliver()'s default
CPU: list[float] = [0.0]  # CPU seconds of this process during the last timed() call


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time; its CPU time (all threads of this process, which also
    serves the API's redirects) is left in ``CPU[0]``: other work on the machine
    lengthens the wall time, hardly the CPU time."""
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    CPU[0] = time.process_time() - c
    return value, time.perf_counter() - t


def spec_for(files: list[Path]) -> dict[str, Any]:
    from delivery import Query

    return {"Sample": [{"Name": "tput", "Dataset": [str(f) for f in files],
                        "Query": Query("Events").columns(*COLUMNS)}]}


def baseline_load(paths: list[Path]) -> tuple[Any, float]:
    """``ak.from_parquet`` of files already on local disk, concatenated like deliver."""
    import awkward as ak

    return timed(lambda: ak.concatenate([ak.from_parquet(p) for p in paths]))


def completed_items(url: str, request_id: str) -> list[Any]:
    from delivery import Client
    from delivery.client.session import file_order

    with Client(url) as client:
        return sorted(client.results(request_id, "success"),
                      key=lambda it: file_order(it["file-id"]))


def download_before(client: Any, request_id: str, item: Any, dest: Path) -> Path:
    """``Client.download`` as it was before this change (commit aa2246e), verbatim but for
    the retries: stream to a ``.part`` file, then check the size and hash the whole file
    again in a second pass, then rename."""
    import uuid

    from delivery.client import verify_size
    from delivery.messages import file_sha256

    dest.mkdir(parents=True, exist_ok=True)
    final = dest / Path(item["s3-object-name"]).name
    part = dest / f".{final.name}.{uuid.uuid4().hex[:8]}.part"
    path = f"/api/v1/requests/{request_id}/files/{item['file-id']}/download"
    try:
        with client.http.stream(path) as response, part.open("wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
        verify_size(part, int(item["total-bytes"]))
        if file_sha256(part) != item["sha256"]:
            raise SystemExit(f"{final.name}: checksum differs")
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    return final


def before(url: str, request_id: str, dest: Path, in_pool: bool) -> tuple[Any, float]:
    """The client before this change, on a Complete request. ``in_pool=False``: as
    deliver() was (download x4, then load the files one by one after the last download,
    then concatenate); ``in_pool=True``: the earlier benchmark's variant (each pool thread
    loads the file it downloaded)."""
    import awkward as ak
    import pyarrow.parquet as pq

    from delivery import Client

    items = completed_items(url, request_id)

    def load(path: Path) -> Any:
        return ak.from_arrow(pq.read_table(path))

    with Client(url) as client:
        def one(item: Any) -> Any:
            path = download_before(client, request_id, item, dest)
            return load(path) if in_pool else path

        def run() -> Any:
            with concurrent.futures.ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
                got = list(pool.map(one, items))
            return ak.concatenate(got if in_pool else [load(p) for p in got])

        array, s = timed(run)
    shutil.rmtree(dest, ignore_errors=True)
    return array, s


def transfer_only(url: str, request_id: str, dest: Path) -> float:
    """(diagnostic) today's ``Client.download`` x4 of every result, nothing loaded."""
    from delivery import Client

    items = completed_items(url, request_id)
    with Client(url) as client, \
            concurrent.futures.ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        _, s = timed(lambda: list(pool.map(
            lambda item: client.download(request_id, item, dest), items)))
    shutil.rmtree(dest, ignore_errors=True)
    return s


def after(url: str, files: list[Path], request_id: str, cache: Path,
          check: Callable[[str, Any], None]) -> tuple[float, float, float]:
    """deliver() itself, reattaching to the Complete request through its local cache entry
    (as after an interrupted session): status, one long poll, download x4 straight from
    the presigned URLs hashing as the bytes stream, each file read in the pool as it
    lands, one conversion. Then deliver() again, answered by the now complete cache
    entry (no HTTP), after the first result is checked and dropped. Returns both wall
    times and the second call's CPU seconds; ``CPU[0]`` is the first call's."""
    from delivery import Client, deliver
    from delivery.client import cache as client_cache

    os.environ["DELIVERY_CACHE"] = str(cache)
    try:
        spec = spec_for(files)
        key = client_cache.key_for(url, spec["Sample"][0])
        client_cache.record_submitted(key, server=url, sample="tput", request_id=request_id)
        with Client(url) as client:
            got, s = timed(lambda: deliver(spec, client=client, progress=False))
            cpu_after = CPU[0]
            if got.request_ids["tput"] != request_id:
                raise SystemExit("deliver() submitted again instead of reattaching")
            check("after", got["tput"])
            del got  # as every other variant, the next one starts without it in memory
            again, s_cached = timed(lambda: deliver(spec, client=client, progress=False))
            CPU[0], cpu_cached = cpu_after, CPU[0]
            check("local cache", again["tput"])
    finally:
        os.environ.pop("DELIVERY_CACHE", None)
        shutil.rmtree(cache, ignore_errors=True)
    return s, s_cached, cpu_cached


def throughput(url: str, files: list[Path], tmp: Path, repeat: int) -> dict[str, Any]:
    from delivery import Client, deliver

    with Client(url) as client:  # transform once; keep the outputs on disk for the baseline
        got, transform_s = timed(lambda: deliver(
            spec_for(files), client=client, cache=False, progress=False, output="paths",
            dest_dir=tmp / "local"))
        request_id = got.request_ids["tput"]
        paths = list(got["tput"])
    if len(paths) != len(files):
        raise SystemExit(f"{len(paths)} outputs for {len(files)} files")
    out_bytes = sum(p.stat().st_size for p in paths)
    runs: dict[str, list[float]] = {k: [] for k in (
        "baseline", "before", "before_pool", "transfer", "after", "cached", "deliver")}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    def check(name: str, array: Any) -> None:
        import awkward as ak

        assert ref is not None
        if len(array) != len(ref) or not ak.array_equal(array, ref):
            raise SystemExit(f"{name}: {len(array)} events differ from the baseline's")

    ref, _ = baseline_load(paths)

    def run_baseline(i: int) -> None:
        array, s = baseline_load(paths)
        runs["baseline"].append(s)
        cpu["baseline"].append(CPU[0])
        check("baseline", array)

    def run_before(i: int) -> None:
        array, s = before(url, request_id, tmp / f"before-{i}", in_pool=False)
        runs["before"].append(s)
        cpu["before"].append(CPU[0])
        check("before", array)

    def run_before_pool(i: int) -> None:
        array, s = before(url, request_id, tmp / f"before-pool-{i}", in_pool=True)
        runs["before_pool"].append(s)
        cpu["before_pool"].append(CPU[0])
        check("before, load in pool", array)

    def run_transfer(i: int) -> None:
        runs["transfer"].append(transfer_only(url, request_id, tmp / f"transfer-{i}"))
        cpu["transfer"].append(CPU[0])

    def run_after(i: int) -> None:
        s, s_cached, cpu_cached = after(url, files, request_id, tmp / f"cache-{i}", check)
        runs["after"].append(s)
        cpu["after"].append(CPU[0])
        runs["cached"].append(s_cached)
        cpu["cached"].append(cpu_cached)

    def run_deliver(i: int) -> None:
        array, s, _ = deliver_reused(url, files)
        runs["deliver"].append(s)
        cpu["deliver"].append(CPU[0])
        check("deliver() again", array)

    variants = [run_baseline, run_before, run_before_pool, run_transfer, run_after,
                run_deliver]
    for i in range(max(1, repeat)):
        # Interleaved, and in a rotated order each round, so load from other work on the
        # machine hits each variant alike; ratios are then taken within a round.
        shift = i % len(variants)
        for run in variants[shift:] + variants[:shift]:
            run(i)
    return {"runs": runs, "cpu": cpu, "events": len(ref), "bytes": out_bytes,
            "nbytes": ref.nbytes, "transform_s": transform_s}


def deliver_reused(url: str, files: list[Path]) -> tuple[Any, float, str]:
    from delivery import Client, deliver

    with Client(url) as client:
        got, s = timed(lambda: deliver(spec_for(files), client=client, cache=False,
                                       progress=False))
        request_id = got.request_ids["tput"]
        if not client.status(request_id).get("reused-from"):
            raise SystemExit(f"{request_id} was transformed again, not served from the cache")
    return got["tput"], s, request_id


def print_throughput(tput: dict[str, Any], n_files: int, events: int, repeat: int) -> None:
    """Two ratios per variant: best against best, and the median over rounds of the ratio
    to the same round's baseline (steadier when other work shares the machine)."""
    runs, mb = tput["runs"], tput["bytes"] / 1e6
    base = min(runs["baseline"])

    def per_round(key: str) -> float:
        return statistics.median(b / s for b, s in zip(runs["baseline"], runs[key],
                                                       strict=True))

    print(f"\n## Throughput: download + load, {n_files} files x {events:,} events, "
          f"{len(COLUMNS)} columns, no cut ({mb:.0f} MB parquet, {tput['nbytes'] / 1e6:.0f} MB "
          f"in memory; {repeat} interleaved rounds)\n")
    cpu = tput["cpu"]
    print("| variant | best s | median s | MB/s (best) | vs baseline, best | "
          "vs baseline, median of rounds | CPU s (median) |")
    print("|---|---|---|---|---|---|---|")
    rows = [("baseline: ak.from_parquet of the same files on local disk", "baseline"),
            (f"before: download x{DOWNLOAD_WORKERS} (hash in a second pass), then load one "
             "by one, concatenate (as deliver() was)", "before"),
            (f"before: the same download x{DOWNLOAD_WORKERS}, each file loaded in its pool "
             "thread (the earlier benchmark's variant)", "before_pool"),
            (f"(diagnostic) today's Client.download x{DOWNLOAD_WORKERS} only, no load",
             "transfer"),
            ("after: deliver() reattached to the Complete request (download hashing as it "
             "streams, each file read in the pool as it lands, one conversion)", "after"),
            ("after: deliver() again from the local cache (no HTTP)", "cached"),
            ("after: deliver() again, served from the server's result cache "
             "(submit + copy + download + load)", "deliver")]
    for name, key in rows:
        s = min(runs[key])
        print(f"| {name} | {s:.2f} | {statistics.median(runs[key]):.2f} | {mb / s:.0f} | "
              f"{base / s:.2f} | {per_round(key):.2f} | {statistics.median(cpu[key]):.2f} |")
    ratio = per_round("after")
    print(f"\ndownload+load / baseline (median of rounds): before {per_round('before'):.2f} "
          f"(as deliver() was), {per_round('before_pool'):.2f} (earlier benchmark's "
          f"variant); after {ratio:.2f}: target >= {RATIO_TARGET} "
          f"{'met' if ratio >= RATIO_TARGET else 'NOT met'}; deliver() end to end from the "
          f"server's cache / baseline = {per_round('deliver'):.2f}; first transform of the "
          f"request took {tput['transform_s']:.1f} s; load average at end (1 min): "
          f"{os.getloadavg()[0]:.2f}")
    print("all runs (s): " + "; ".join(f"{k} " + " ".join(f"{s:.2f}" for s in v)
                                       for k, v in runs.items()))

"""Engine benchmark: our streaming transform against two baselines measured in the same run.

    python bench/bench_engine.py                    # 1M events, generated once into bench/.data
    python bench/bench_engine.py --events 100000    # smoke run (CI)
    python bench/bench_engine.py --memory-events 5000000   # also peak RSS on a ~2 GB input

Variants, each in its own process so peak RSS is its own:
- ours:     transformers.run.transform_file to Parquet (zstd 1, no dictionary), streaming,
            with its default options (cuts evaluated with awkward);
- ours-numba: the same with numba-compiled cuts, its JIT paid before the timed run;
- bare:     uproot arrays() of the whole file, the same cut once, ak.to_arrow_table,
            pq.write_table with the same codec (zstd);
- servicex: the ServiceX uproot-raw path: tree.iterate with uproot's default step,
            the cut per chunk, ak.concatenate, ParquetWriter with pyarrow's defaults.
The baselines apply the cut with plain awkward (the bench's own fixed code, never a
user string). Ratios are throughput(ours) / throughput(baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

BRANCHES = ["run", "luminosityBlock", "event", "nMuon", "nJet",
            "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge", "Muon_pfRelIso04_all",
            "Muon_tightId", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btagDeepFlavB",
            "Jet_jetId", "MET_pt", "MET_phi", "MET_sumEt"]  # fmt: skip
CUT = "count(Muon_pt > 20) >= 2"
KERNEL_CUTS = {"flat": "MET_pt > 30", "jagged any": "any(Jet_pt > 50)",
               "jagged reduction": "sum(Jet_pt) > 200"}  # fmt: skip


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(path: str, out: str, cut: str, numba: bool) -> dict:
    from delivery.policy import SourcePolicy
    from delivery.selection import parse_selection
    from transformers.run import TransformOptions, transform_file

    sel = parse_selection([{"treename": "Events", "filter_name": BRANCHES, "cut": cut}])
    policy = SourcePolicy.create([os.path.dirname(os.path.realpath(path)), out])
    options = TransformOptions(numba=numba)
    extra = {}
    if numba:
        # A worker is long-lived: it pays the JIT (or the load from numba's disk cache)
        # once. Do that in a first pass over the cut's own branch, reported apart.
        from transformers.kernels import jit_seconds

        warm_sel = parse_selection([{"treename": "Events", "filter_name": ["nMuon"],
                                     "cut": cut}])
        t = time.perf_counter()
        transform_file(path, warm_sel, out, policy=policy, request_id="warm-up", options=options)
        extra = {"jit_seconds": jit_seconds(), "warm_up_seconds": time.perf_counter() - t}
    t = time.perf_counter()
    r = transform_file(path, sel, out, policy=policy, options=options)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "events_out": r.events_out, "bytes_out": r.bytes,
            "split": r.timings, **extra}


def _cut_mask(arrays):  # the bench's own fixed cut, equal to CUT
    import awkward as ak

    return ak.sum(arrays["Muon_pt"] > 20, axis=1) >= 2


def _bare(path: str, out: str) -> dict:
    import awkward as ak
    import pyarrow.parquet as pq
    import uproot

    t = time.perf_counter()
    tree = uproot.open(path)["Events"]
    wanted = set(BRANCHES)
    arrays = tree.arrays(filter_name=wanted.__contains__)
    arrays = arrays[_cut_mask(arrays)]
    table = ak.to_arrow_table(arrays, extensionarray=False)
    pq.write_table(table, f"{out}/bare.parquet", compression="zstd")
    return {"seconds": time.perf_counter() - t, "events_out": len(arrays),
            "bytes_out": os.path.getsize(f"{out}/bare.parquet")}


def _servicex(path: str, out: str) -> dict:
    import awkward as ak
    import pyarrow.parquet as pq
    import uproot

    t = time.perf_counter()
    tree = uproot.open(path)["Events"]
    wanted = set(BRANCHES)
    chunks = [c[_cut_mask(c)] for c in tree.iterate(filter_name=wanted.__contains__)]
    arrays = ak.concatenate(chunks)
    table = ak.to_arrow_table(arrays, extensionarray=False)
    with pq.ParquetWriter(f"{out}/servicex.parquet", table.schema) as writer:
        writer.write_table(table)
    return {"seconds": time.perf_counter() - t, "events_out": len(arrays),
            "bytes_out": os.path.getsize(f"{out}/servicex.parquet")}


def child(args: argparse.Namespace) -> None:
    os.makedirs(args.out, exist_ok=True)
    if args.variant == "ours":
        result = _ours(args.input, args.out, args.cut, numba=False)
    elif args.variant == "ours-numba":
        result = _ours(args.input, args.out, args.cut, numba=True)
    elif args.variant == "bare":
        result = _bare(args.input, args.out)
    else:
        result = _servicex(args.input, args.out)
    result["peak_rss_mb"] = _rss_mb()
    print(json.dumps(result))


def run_child(variant: str, path: Path, out: Path, cut: str = CUT) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--input", str(path),
           "--out", str(out), "--cut", cut]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_input(events: int, data: Path) -> Path:
    from transformers.generate import generate

    path = data / f"nanoaod-{events}.root"
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        print(f"generating {events:,} events (ZSTD, 10k-entry baskets) into {path} ...")
        generate(path, events, codec="ZSTD", basket_entries=10_000)
    return path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--memory-events", type=int, default=0, help="also measure RSS on this size")
    p.add_argument("--data", default=str(Path(__file__).parent / ".data"))
    p.add_argument("--repeat", type=int, default=1, help="runs per variant; the best is kept")
    p.add_argument("--child"), p.add_argument("--input"), p.add_argument("--out")
    p.add_argument("--cut", default=CUT)
    args = p.parse_args()
    if args.child:
        args.variant = args.child
        return child(args)

    import uproot

    data = Path(args.data)
    path = ensure_input(args.events, data)
    tree = uproot.open(path)["Events"]
    raw_mb = sum(tree[b].uncompressed_bytes for b in BRANCHES) / 1e6
    file_mb = path.stat().st_size / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; input {file_mb:.0f} MB on disk, "
          f"{args.events:,} events, {len(BRANCHES)} branches = {raw_mb:.0f} MB uncompressed")
    out = data / "out"
    results = {}
    for variant in ("ours", "ours-numba", "bare", "servicex"):
        runs = [run_child(variant, path, out) for _ in range(args.repeat)]
        results[variant] = min(runs, key=lambda r: r["seconds"])
    base = results["ours"]
    print(f"\ncut: {CUT}  ->  {base['events_out']:,} events pass\n")
    print("| variant | seconds | events/s | MB/s (uncompressed in) | peak RSS MB | out MB | ours faster by |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = r["seconds"] / base["seconds"]
        print(f"| {name} | {r['seconds']:.2f} | {args.events / r['seconds']:,.0f} | "
              f"{raw_mb / r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['bytes_out'] / 1e6:.1f} | {ratio:.2f}x |")
        assert r["events_out"] == base["events_out"], f"{name} disagrees on the cut"
    split = base["split"]
    print("\nours, split (s): " + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
          + f"; ours-numba paid {results['ours-numba'].get('jit_seconds', 0):.2f} s of JIT once, "
          "before its timed run (numba's disk cache keeps the machine code between processes)")

    print("\n| cut step (evaluate + apply the mask) | awkward s | numba s | numba speed-up |")
    print("|---|---|---|---|")
    for label, cut in KERNEL_CUTS.items():
        nb = run_child("ours-numba", path, out, cut)
        ak_ = run_child("ours", path, out, cut)
        assert nb["events_out"] == ak_["events_out"]
        print(f"| {label}: `{cut}` | {ak_['split']['cut']:.3f} | {nb['split']['cut']:.3f} | "
              f"{ak_['split']['cut'] / max(nb['split']['cut'], 1e-9):.1f}x |")

    if args.memory_events:
        big = ensure_input(args.memory_events, data)
        r = run_child("ours", big, out)
        print(f"\nmemory: {big.stat().st_size / 1e9:.2f} GB input, {args.memory_events:,} events: "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()

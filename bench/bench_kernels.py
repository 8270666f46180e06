"""Awkward ``evaluate`` against the numba kernels on NanoAOD-like columns held in memory.

    python bench/bench_kernels.py --events 1000000

Reports per cut the warm time of each (median of ``--repeat`` runs), their ratio,
and separately the first kernel call and the JIT seconds in it. By default the
kernel cache is a fresh temporary directory, so the JIT column is a real compile;
pass ``--cache DIR`` twice in a row to see the cost of loading numba's disk cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CUTS = ("MET_pt > 30", "any(Jet_pt > 50)", "count(Muon_pt > 20) >= 2", "sum(Jet_pt) > 200")


def synthesise(n: int, seed: int) -> dict[str, ak.Array]:
    """Poisson multiplicities (muons ~2, jets ~5) and falling, pt-ordered spectra, float32."""
    rng = np.random.default_rng(seed)
    columns: dict[str, ak.Array] = {}
    for name, mean, floor, scale in (("Muon", 2.0, 3.0, 15.0), ("Jet", 5.0, 15.0, 30.0)):
        counts = rng.poisson(mean, n)
        pt = (floor + rng.exponential(scale, int(counts.sum()))).astype(np.float32)
        jagged = ak.unflatten(pt, counts)
        columns[f"{name}_pt"] = ak.sort(jagged, axis=1, ascending=False)
        columns[f"{name}_eta"] = ak.unflatten(
            rng.normal(0, 1.5, int(counts.sum())).astype(np.float32), counts)
    columns["MET_pt"] = ak.Array(rng.exponential(25.0, n).astype(np.float32))
    return columns


def median_ms(func: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", help="kernel cache directory (default: a fresh temporary one)")
    args = parser.parse_args(argv)
    os.environ["DELIVERY_KERNEL_CACHE"] = args.cache or tempfile.mkdtemp(prefix="kernels-")

    from delivery.selection.expr import parse_expression
    from delivery.selection.types import ColumnType
    from transformers.evaluate import evaluate
    from transformers.kernels import compile_kernel, jit_seconds

    n = args.events
    columns = synthesise(n, args.seed)
    types = {k: ColumnType(v.ndim - 1, "float") for k, v in columns.items()}
    rows = []
    for text in CUTS:
        expr = parse_expression(text)
        kernel = compile_kernel(expr, types)
        assert kernel is not None, text
        jit_before, start = jit_seconds(), time.perf_counter()
        got = kernel(columns, n)
        first = time.perf_counter() - start
        jit = jit_seconds() - jit_before
        reference = ak.to_numpy(evaluate(expr, columns, n))
        assert np.array_equal(got, reference), text  # time only what agrees
        awkward_ms = median_ms(lambda e=expr: evaluate(e, columns, n), args.repeat)
        numba_ms = median_ms(lambda k=kernel: k(columns, n), args.repeat)
        rows.append((text, awkward_ms, numba_ms, first, jit, float(reference.mean())))

    print(f"{n:,} events, median of {args.repeat} warm runs, numpy {np.__version__}, "
          f"awkward {ak.__version__}, cache {os.environ['DELIVERY_KERNEL_CACHE']}\n")
    print("| cut | pass | awkward ms | numba ms | awkward/numba | first call s | JIT s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for text, awkward_ms, numba_ms, first, jit, frac in rows:
        print(f"| `{text}` | {frac:.1%} | {awkward_ms:.2f} | {numba_ms:.2f} | "
              f"{awkward_ms / numba_ms:.1f}x | {first:.2f} | {jit:.2f} |")


if __name__ == "__main__":
    main()

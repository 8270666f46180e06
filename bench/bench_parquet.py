"""Parquet writer settings, measured: the evidence behind transformers.sinks.ParquetOptions.

    python bench/bench_parquet.py [--events 300000]

Reads ~20 NanoAOD-like branches once (no cut, so the writer sees real volume),
converts them to Arrow once, then writes the same table with each setting and
reports MB/s of Arrow data written and the file size, relative to pyarrow's
defaults (snappy, dictionary on) measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import awkward as ak
import pyarrow as pa
import pyarrow.parquet as pq
import uproot
from bench_engine import BRANCHES, ensure_input

SETTINGS: dict[str, dict] = {
    "pyarrow defaults (snappy, dict)": {},
    "zstd 1, no dict (ours)": {"compression": "zstd", "compression_level": 1,
                               "use_dictionary": False},
    "zstd 1, dict": {"compression": "zstd", "compression_level": 1},
    "zstd 3, no dict": {"compression": "zstd", "compression_level": 3, "use_dictionary": False},
    "lz4, no dict": {"compression": "lz4", "use_dictionary": False},
    "snappy, no dict": {"compression": "snappy", "use_dictionary": False},
    "none, no dict": {"compression": "none", "use_dictionary": False},
    "zstd 1, no dict, no stats": {"compression": "zstd", "compression_level": 1,
                                  "use_dictionary": False, "write_statistics": False},
}


def _write(table: pa.Table, path: str, options: dict, row_group_rows: int) -> float:
    t = time.perf_counter()
    with pq.ParquetWriter(path, table.schema, **options) as writer:
        writer.write_table(table, row_group_size=row_group_rows)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--data", default=str(Path(__file__).parent / ".data"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    path = ensure_input(args.events, Path(args.data))
    wanted = set(BRANCHES)
    arrays = uproot.open(path)["Events"].arrays(filter_name=wanted.__contains__)
    table = ak.to_arrow_table(arrays, extensionarray=False)
    mb = table.nbytes / 1e6
    print(f"{args.events:,} events, {len(BRANCHES)} branches, {mb:.0f} MB of Arrow data\n")
    print("| setting | MB/s | file MB | speed vs defaults |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, options in SETTINGS.items():
            out = os.path.join(tmp, "t.parquet")
            best = min(_write(table, out, options, 1 << 30) for _ in range(args.repeat))
            rows.append((name, mb / best, os.path.getsize(out) / 1e6))
        base = rows[0][1]
        for name, speed, size in rows:
            print(f"| {name} | {speed:.0f} | {size:.1f} | {speed / base:.2f}x |")
        print("\nrow-group size, zstd 1 no dict:")
        ours = SETTINGS["zstd 1, no dict (ours)"]
        for rows_per_group in (10_000, 100_000, 1 << 30):
            out = os.path.join(tmp, "t.parquet")
            best = min(_write(table, out, ours, rows_per_group) for _ in range(args.repeat))
            label = "whole table" if rows_per_group == 1 << 30 else f"{rows_per_group:,} rows"
            print(f"- {label}: {mb / best:.0f} MB/s")


if __name__ == "__main__":
    main()

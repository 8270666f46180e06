"""Run layer: one input file, end to end, into one output file and a :class:`FileResult`.

Contract: :func:`transform_file` raises :class:`~delivery.errors.DeliveryError`
(permanent or transient) and leaves no output behind on failure;
:func:`run_file` is the same but records the error in the result instead, for
callers that report rather than retry (the CLI). Memory is bounded by the
step size: chunks are read, cut, converted and written one at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from delivery.errors import DeliveryError, InputError, PermanentError, SelectionError
from delivery.policy import SourcePolicy
from delivery.selection.model import Selection, TreeQuery
from transformers.copy import copy_objects
from transformers.evaluate import evaluate
from transformers.plan import Plan, make_plan
from transformers.sinks import FORMATS, SUFFIXES, ParquetOptions, open_sink
from transformers.source import open_input
from transformers.table import find_table, table_names

__all__ = ["TransformOptions", "FileResult", "transform_file", "run_file", "output_path"]


@dataclass(frozen=True)
class TransformOptions:
    format: str = "parquet"
    step_bytes: int = 64 * 1024 * 1024  # uncompressed bytes of the read branches per step
    parquet: ParquetOptions = field(default_factory=ParquetOptions)
    # Compiled cuts. Off by default: bench/bench_engine.py measures the whole transform
    # no faster with them (the cut is ~5% of the time, most of it applying the mask),
    # while numba adds ~0.8 s of start-up and ~140 MB of RSS per process.
    numba: bool = False
    open_timeout: float = 60.0


@dataclass
class FileResult:
    input: str
    output: str | None = None
    format: str = "parquet"
    events_in: int = 0
    events_out: int = 0
    bytes: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    permanent: bool | None = None


def output_path(output_dir: str | Path, request_id: str, input_url: str, fmt: str) -> Path:
    """Deterministic, flat object name: a re-run overwrites instead of duplicating."""
    digest = hashlib.sha256(f"{request_id}\0{input_url}".encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", input_url.rstrip("/").rsplit("/", 1)[-1])
    stem = re.sub(r"\.root$", "", stem)[:80] or "output"
    return Path(output_dir) / f"{stem}.{digest}{SUFFIXES[fmt]}"


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"read": 0.0, "cut": 0.0, "compute": 0.0, "write": 0.0}

    def iterate(self, source: Iterator[Any]) -> Iterator[Any]:
        while True:
            t = time.perf_counter()
            try:
                item = next(source)
            except StopIteration:
                self.seconds["read"] += time.perf_counter() - t
                return
            self.seconds["read"] += time.perf_counter() - t
            yield item

    def add(self, key: str, since: float) -> None:
        self.seconds[key] += time.perf_counter() - since


def _cut_mask(plan: Plan, cols: dict[str, Any], n: int, use_numba: bool) -> Any:
    assert plan.cut is not None
    if use_numba:
        from transformers.kernels import compile_kernel

        kernel = compile_kernel(plan.cut, plan.types)
        if kernel is not None:
            return kernel(cols, n)
    return evaluate(plan.cut, cols, n)


def _apply(plan: Plan, chunk: ak.Array, timer: _Timer, use_numba: bool) -> ak.Array:
    cols = {n: chunk[n] for n in plan.read}
    n = len(chunk)
    element_mask = None
    if plan.cut is not None and plan.cut_type is not None:
        t = time.perf_counter()
        mask = _cut_mask(plan, cols, n, use_numba)
        if plan.cut_type.depth == 0:
            keep = np.asarray(mask, dtype=bool)
            cols = {k: v[keep] for k, v in cols.items()}
            n = int(keep.sum())
        else:
            element_mask = mask
        timer.add("cut", t)
    t = time.perf_counter()
    out = {o.column: cols[o.column] if o.expr is None else evaluate(o.expr, cols, n)
           for o in plan.outputs}
    if element_mask is not None:
        out = _mask_elements(out, element_mask)
    timer.add("compute", t)
    return ak.zip(out, depth_limit=1)


def _mask_elements(out: dict[str, Any], mask: ak.Array) -> dict[str, Any]:
    """A jagged cut filters the elements of the collection it was computed on."""
    counts = ak.num(mask, axis=1)
    masked = {}
    for name, col in out.items():
        if isinstance(col, ak.Array) and col.ndim > 1:
            if not np.array_equal(ak.num(col, axis=1), counts):
                raise SelectionError("the cut is per element of another collection than "
                                     f"column {name!r}; reduce it with any() or count()",
                                     field="cut")
            masked[name] = col[mask]
        else:
            masked[name] = col
    return masked


def _steps(plan: Plan, step_bytes: int) -> int:
    per_entry = plan.table.bytes_per_entry(plan.read)
    return int(min(max(step_bytes / per_entry, 1_000), 2_000_000))


def _plans(directory: Any, selection: Selection, fmt: str, where: str,
           warnings: list[str]) -> list[Plan]:
    plans: list[Plan] = []
    for i, query in enumerate(selection.queries):
        if not isinstance(query, TreeQuery):
            continue
        for tree_in, tree_out in query.trees:
            table = find_table(directory, tree_in, where)
            if table is None:
                msg = (f"{where}: no TTree or RNTuple {tree_in!r}; it has: "
                       + (", ".join(table_names(directory)[:20]) or "none"))
                if query.fail_on_missing_trees:
                    raise InputError(msg)
                warnings.append(msg)
                continue
            if any(p.output_name == tree_out for p in plans):
                raise SelectionError(f"two queries write the output tree {tree_out!r}",
                                     field=f"selection[{i}].treename")
            plans.append(make_plan(table, query, tree_out, f"selection[{i}]"))
    if not plans:
        raise InputError(warnings[0] if warnings else f"{where}: nothing to read")
    if fmt != "root-file" and len(plans) > 1:
        raise SelectionError(f"{fmt} output holds one tree; this selection reads {len(plans)} "
                             "(use root-file output or one request per tree)", field="selection")
    if fmt != "root-file" and selection.copy_queries:
        raise SelectionError("copy_histograms needs root-file output", field="selection")
    return plans


def transform_file(inputs: str | Sequence[str], selection: Selection, output_dir: str | Path,
                   *, policy: SourcePolicy, request_id: str = "local",
                   options: TransformOptions | None = None) -> FileResult:
    """Transform one file (given as one URL or a list of replicas); raises DeliveryError."""
    if isinstance(inputs, os.PathLike):  # a pathlib.Path is one input, not a list of replicas
        inputs = os.fspath(inputs)
    opts = options or TransformOptions()
    if opts.format not in FORMATS:
        raise SelectionError(f"unknown format {opts.format!r}; use one of {', '.join(FORMATS)}")
    start = time.perf_counter()
    url, directory = open_input(inputs, policy, opts.open_timeout)
    first = inputs if isinstance(inputs, str) else inputs[0]
    result = FileResult(input=url, format=opts.format)
    timer = _Timer()
    with directory:
        plans = _plans(directory, selection, opts.format, url, result.warnings)
        path = output_path(output_dir, request_id, first, opts.format)
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = open_sink(opts.format, path, opts.parquet)
        try:
            for plan in plans:
                result.events_in += plan.table.num_entries
                written = False
                chunks = plan.table.iterate(plan.read, _steps(plan, opts.step_bytes))
                for chunk in timer.iterate(chunks):
                    out = _apply(plan, chunk, timer, opts.numba)
                    if len(out) or not written:
                        t = time.perf_counter()
                        sink.write(plan.output_name, out)
                        timer.add("write", t)
                        written = True
                    result.events_out += len(out)
                if not written:  # 0 entries: still write the schema
                    sink.write(plan.output_name,
                               _apply(plan, plan.table.read(plan.read, 0, 0), timer, False))
            for copy in selection.copy_queries:
                copy_objects(directory, copy.pattern, sink, url)
            t = time.perf_counter()
            result.bytes = sink.close()
            timer.add("write", t)
        except BaseException:
            sink.abort()
            raise
    result.output = str(path)
    result.timings = {k: round(v, 4) for k, v in timer.seconds.items()}
    result.seconds = time.perf_counter() - start
    return result


def run_file(inputs: str | Sequence[str], selection: Selection, output_dir: str | Path,
             **kwargs: Any) -> FileResult:
    """Like :func:`transform_file`, but a failure becomes ``result.error``."""
    start = time.perf_counter()
    if isinstance(inputs, os.PathLike):
        inputs = os.fspath(inputs)
    try:
        return transform_file(inputs, selection, output_dir, **kwargs)
    except DeliveryError as err:
        first = inputs if isinstance(inputs, str) else (list(inputs) or [""])[0]
        opts = kwargs.get("options") or TransformOptions()
        return FileResult(input=first, format=opts.format, error=err.reason,
                          permanent=isinstance(err, PermanentError),
                          seconds=time.perf_counter() - start)

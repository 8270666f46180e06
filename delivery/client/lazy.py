"""Delivered files as lazy ``dask_awkward`` arrays: ``deliver(spec, output="dask")``.

Contract:

- One partition per delivered file, in file order; nothing is read until the
  graph is computed, apart from each file's schema (one partition's type, read
  without its data) and, where the footer says it, its length.
- Parquet goes through ``dask_awkward.from_parquet`` (so an analysis that uses
  a few columns reads only those); Arrow IPC and ROOT through
  ``dask_awkward.from_map`` with :func:`delivery.client.load.load_file` per
  partition, so every format computes to exactly what ``output="arrays"``
  returns.
- ``dask-awkward`` is optional (the ``dask`` extra): without it
  :func:`require_dask` raises ``ImportError`` saying how to install it, and
  :func:`~delivery.client.deliver.deliver` calls it before submitting anything.
- No files: a one-partition empty array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from delivery.client.load import format_of, load_file, root_columns, root_tree_name

__all__ = ["require_dask", "to_dask"]


def require_dask() -> None:
    try:
        import dask_awkward  # noqa: F401
    except ImportError as err:
        raise ImportError('output="dask" needs dask-awkward: pip install '
                          "'columnar-delivery[dask]' (or dask-awkward)") from err


class _LoadFile:
    """The per-partition function: one file, loaded as the eager path loads it."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def __call__(self, path: str) -> Any:
        return load_file(path, self.fmt)

    def __dask_tokenize__(self) -> str:
        return f"delivery-load-{self.fmt}"


def _empty(path: Path, fmt: str) -> Any:
    """A zero-length array of the file's type, read without its data."""
    import awkward as ak
    import pyarrow as pa

    if fmt == "arrow":
        with pa.OSFile(str(path), "rb") as source:
            reader = pa.ipc.open_file(source)
            return ak.from_arrow(reader.schema.empty_table())
    import uproot

    with uproot.open(path) as file:
        tree = file[root_tree_name(file)]
        keep = frozenset(root_columns(tree))
        return tree.arrays(filter_name=lambda name: name in keep, entry_stop=0, library="ak")


def to_dask(paths: Sequence[Path], fmt: str) -> Any:
    """A ``dask_awkward.Array`` over ``paths`` (all of format ``fmt``; see the contract)."""
    require_dask()
    import awkward as ak
    import dask_awkward as dak

    if not paths:
        return dak.from_awkward(ak.Array([]), npartitions=1)
    kinds = {format_of(p, fmt) for p in paths}
    if len(kinds) != 1:
        raise ValueError(f"one format per sample, found {', '.join(sorted(kinds))}")
    (kind,) = kinds
    names = [str(p) for p in paths]
    if kind == "parquet":
        return dak.from_parquet(names)
    empty = _empty(paths[0], kind)
    meta = ak.Array(empty.layout.to_typetracer(forget_length=True))
    divisions: tuple[int, ...] | None = None
    if kind == "root-file":  # the TTree header says each file's length
        import itertools

        import uproot

        lengths = []
        for p in paths:
            with uproot.open(p) as file:
                lengths.append(int(file[root_tree_name(file)].num_entries))
        divisions = (0, *itertools.accumulate(lengths))
    return dak.from_map(_LoadFile(kind), names, label=f"delivery-{kind}", meta=meta,
                        divisions=divisions)

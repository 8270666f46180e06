"""Delivered files into awkward arrays, for every output format the service writes.

Contract:

- :func:`load_file` picks the reader by the file's suffix (the server names
  every output ``<n>.parquet``, ``<n>.arrow`` or ``<n>.root``), or by ``fmt``
  for a file named otherwise:

  - ``parquet``: ``pyarrow.parquet`` then ``ak.from_arrow``;
  - ``arrow``: the Arrow IPC *file* format (``pyarrow.ipc.open_file``), then
    ``ak.from_arrow``;
  - ``root-file``: uproot, the file's one TTree (a ROOT output may also hold
    copied histograms, which are skipped), without the ``n<branch>`` counter
    branches uproot's writer adds beside every jagged branch. ROOT branch names
    cannot hold every character, so a column named by an expression's text
    (``Muon_pt * 2``) comes back under the name the server gave its branch
    (``Muon_pt___2``); Parquet and Arrow keep the text.

  The values are those the server wrote, whatever the format: a test pins
  all three against uproot reading the inputs and applying the cut.
- A ROOT output holding several trees (a selection over several trees) is
  refused with :class:`MultipleTrees` naming them: read it with
  ``output="paths"`` and uproot.
- :func:`read_part` reads a file without converting it (an Arrow table for
  Parquet and Arrow, an awkward array for ROOT) and :func:`combine` turns the
  parts into one array, in the order given, with one conversion: Arrow tables
  are joined without a copy (``pa.concat_tables``) and converted by a single
  ``ak.from_arrow``, which bench/bench_client.py measured 3-8x faster than
  converting each file and joining the arrays with ``ak.concatenate``.

Nothing here evaluates a user string: ROOT branches are chosen with a Python
predicate over names the file itself lists, never uproot expressions or cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MultipleTrees", "combine", "format_of", "load_file", "read_part",
           "root_columns", "root_tree_name"]

_BY_SUFFIX = {".parquet": "parquet", ".arrow": "arrow", ".root": "root-file"}


class MultipleTrees(ValueError):
    """A ROOT output with more than one tree cannot become one array."""


def format_of(path: str | Path, fmt: str | None = None) -> str:
    """The output format of a delivered file: from its suffix, else ``fmt``."""
    found = _BY_SUFFIX.get(Path(path).suffix.lower())
    if found is not None:
        return found
    if fmt in _BY_SUFFIX.values():
        return str(fmt)
    raise ValueError(f"{Path(path).name}: cannot tell its format (suffix .parquet, .arrow "
                     "or .root, or give the sample's Format)")


def load_file(path: str | Path, fmt: str | None = None) -> Any:
    """One delivered file as an ``ak.Array`` (see the module's contract)."""
    return combine([read_part(path, fmt)])


def read_part(path: str | Path, fmt: str | None = None) -> Any:
    """The file read but not converted: a ``pyarrow.Table`` (Parquet, Arrow) or an
    ``ak.Array`` (ROOT); :func:`combine` finishes the job."""
    kind = format_of(path, fmt)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if kind == "arrow":
        import pyarrow as pa

        # Read into memory rather than memory-map: the caller may delete the file
        # right after (the per-file iterator does), which a live mapping would forbid
        # on some platforms.
        with pa.OSFile(str(path), "rb") as source:
            return pa.ipc.open_file(source).read_all()
    return _root(Path(path))


def root_tree_name(file: Any) -> str:
    """The name of the only TTree in an open uproot file (cycles collapsed)."""
    names = sorted({key.split(";")[0] for key, cls in file.classnames().items()
                    if cls == "TTree"})
    if len(names) != 1:
        raise MultipleTrees(
            f"{Path(file.file_path).name} holds {len(names)} trees "
            f"({', '.join(names) or 'none'}): one array per file needs exactly one; use "
            "output='paths' and read it with uproot")
    return names[0]


def root_columns(tree: Any) -> list[str]:
    """The tree's branches less the counters uproot's writer added for jagged ones."""
    branches = list(tree.branches)
    counters = set()
    for branch in branches:
        count = getattr(branch, "count_branch", None)
        # Only the writer's own counter (``n`` + the branch's name) is dropped: a
        # selected column such as NanoAOD's ``nMuon`` is data and stays.
        if count is not None and count.name == f"n{branch.name}":
            counters.add(count.name)
    return [b.name for b in branches if b.name not in counters]


def _root(path: Path) -> Any:
    import uproot

    with uproot.open(path) as file:
        tree = file[root_tree_name(file)]
        keep = frozenset(root_columns(tree))
        return tree.arrays(filter_name=lambda name: name in keep, library="ak")


def combine(parts: Sequence[Any]) -> Any:
    """The parts from :func:`read_part` as one ``ak.Array``, in order."""
    import awkward as ak
    import pyarrow as pa

    if not parts:
        return ak.Array([])
    if all(isinstance(p, pa.Table) for p in parts):
        try:
            return ak.from_arrow(pa.concat_tables(parts) if len(parts) > 1 else parts[0])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # schemas differ (files from different servers?): awkward unifies them
    arrays = [ak.from_arrow(p) if isinstance(p, pa.Table) else p for p in parts]
    return arrays[0] if len(arrays) == 1 else ak.concatenate(arrays)

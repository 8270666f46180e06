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
- :func:`concatenate` joins per-file arrays once, in the order given.

Nothing here evaluates a user string: ROOT branches are chosen with a Python
predicate over names the file itself lists, never uproot expressions or cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MultipleTrees", "concatenate", "format_of", "load_file", "root_tree_name"]

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
    kind = format_of(path, fmt)
    if kind == "parquet":
        return _parquet(Path(path))
    if kind == "arrow":
        return _arrow(Path(path))
    return _root(Path(path))


def _parquet(path: Path) -> Any:
    import awkward as ak
    import pyarrow.parquet as pq

    return ak.from_arrow(pq.read_table(path))


def _arrow(path: Path) -> Any:
    import awkward as ak
    import pyarrow as pa

    # Read into memory rather than memory-map: the caller may delete the file
    # right after (the per-file iterator does), which a live mapping would forbid
    # on some platforms.
    with pa.OSFile(str(path), "rb") as source:
        table = pa.ipc.open_file(source).read_all()
    return ak.from_arrow(table)


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


def concatenate(arrays: Sequence[Any]) -> Any:
    """The per-file arrays as one, in order; no copy for a single file."""
    import awkward as ak

    if not arrays:
        return ak.Array([])
    if len(arrays) == 1:
        return arrays[0]
    return ak.concatenate(list(arrays))

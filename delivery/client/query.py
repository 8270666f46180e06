"""A small builder for ``uproot-raw`` selections, validated before anything is sent.

::

    Query("Events").columns("Muon_*", "MET_pt").where("count(Muon_pt > 20) >= 2")
    Query("Events").columns("MET_pt").define("lead_pt", "max(Muon_pt)")

Contract:

- A ``Query`` is immutable: every method returns a new one.
- ``columns`` without ``define`` becomes ``filter_name`` (names or globs);
  with ``define``, the output is listed exactly in ``expressions`` (plain
  column names, then the defined names) and each definition is an alias, so
  globs cannot be combined with ``define`` (the server cannot expand a glob
  into expressions): that is refused here.
- ``where`` calls are joined with ``and``.
- :meth:`Query.selection` validates with :func:`delivery.parse_selection`;
  a malformed query raises :class:`~delivery.errors.SelectionError` locally.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from delivery.errors import SelectionError
from delivery.selection import Selection, parse_selection

__all__ = ["Query", "selection_json"]

_GLOB = set("*?[")


@dataclasses.dataclass(frozen=True)
class Query:
    """One tree query: a tree, its columns, a cut and derived columns."""

    tree: str
    _columns: tuple[str, ...] = ()
    _cuts: tuple[str, ...] = ()
    _defines: tuple[tuple[str, str], ...] = ()

    def columns(self, *names: str) -> Query:
        """Add output columns: branch names, or globs when nothing is defined."""
        return dataclasses.replace(self, _columns=self._columns + tuple(names))

    def where(self, cut: str) -> Query:
        """Keep only events passing ``cut`` (and any earlier ``where``)."""
        return dataclasses.replace(self, _cuts=self._cuts + (cut,))

    def define(self, name: str, expr: str) -> Query:
        """Add the derived column ``name`` = ``expr``; usable in ``where`` too."""
        if any(n == name for n, _ in self._defines):
            raise SelectionError(f"{name!r} is already defined", field="define")
        return dataclasses.replace(self, _defines=self._defines + ((name, expr),))

    def to_list(self) -> list[dict[str, Any]]:
        """The selection as decoded JSON (not yet validated)."""
        item: dict[str, Any] = {"treename": self.tree}
        if self._defines:
            globbed = [c for c in self._columns if _GLOB & set(c)]
            if globbed:
                raise SelectionError(f"the glob {globbed[0]!r} cannot be combined with "
                                     "define(): name each column exactly", field="columns")
            clash = sorted({n for n, _ in self._defines} & set(self._columns))
            if clash:
                raise SelectionError(f"{clash[0]!r} is both a column and a definition",
                                     field="define")
            item["expressions"] = list(self._columns) + [n for n, _ in self._defines]
            item["aliases"] = dict(self._defines)
        elif self._columns:
            item["filter_name"] = list(self._columns)
        if self._cuts:
            item["cut"] = " and ".join(
                f"({c})" if len(self._cuts) > 1 else c for c in self._cuts)
        return [item]

    def selection(self) -> Selection:
        """The validated selection (raises :class:`SelectionError`)."""
        return parse_selection(self.to_list())

    def to_json(self) -> str:
        """Canonical JSON text of the validated selection."""
        return self.selection().to_json()


def selection_json(query: Query | str | list[Any] | dict[str, Any]) -> str:
    """Validate any accepted query form and return canonical selection JSON."""
    if isinstance(query, Query):
        return query.to_json()
    if isinstance(query, str | list | dict):
        return parse_selection(query).to_json()
    raise SelectionError(f"must be a Query, JSON text or a list of queries, not "
                         f"{type(query).__name__}", field="Query")

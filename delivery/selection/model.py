"""The ``uproot-raw`` selection: a JSON list of tree queries and copy queries.

:func:`parse_selection` is strict: unknown keys and wrong types are refused
with a message naming the field (``selection[0].cut: ...``). Every user string
that holds an expression is parsed here, once, into the IR of
:mod:`delivery.selection.expr`, so a malicious selection is refused at submit
time, before any file is opened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from delivery.errors import SelectionError
from delivery.selection.expr import Expr, parse_expression

__all__ = ["TreeQuery", "CopyQuery", "Selection", "parse_selection", "MAX_SELECTION_BYTES"]

MAX_SELECTION_BYTES = 256 * 1024
MAX_QUERIES = 64
MAX_LIST = 10_000
MAX_NAME = 1024
TREE_KEYS = ("treename", "filter_name", "filter_typename", "expressions", "cut", "aliases",
             "fail_on_missing_trees", "use_standard_awkward_axis")  # fmt: skip
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TreeQuery:
    """Read ``trees`` (input name -> output name) with one set of columns and cut."""

    trees: tuple[tuple[str, str], ...]
    filter_name: tuple[str, ...] | None = None
    filter_typename: tuple[str, ...] | None = None
    expressions: tuple[tuple[str, Expr], ...] | None = None
    cut: tuple[str, Expr] | None = None
    aliases: Mapping[str, tuple[str, Expr]] = field(default_factory=dict)
    fail_on_missing_trees: bool = False
    # Accepted for compatibility: our output always keeps events on the first axis.
    use_standard_awkward_axis: bool | None = None

    def to_json(self) -> dict[str, Any]:
        names = dict(self.trees)
        treename: Any = (
            names if any(i != o for i, o in self.trees)
            else [i for i, _ in self.trees] if len(self.trees) > 1 else self.trees[0][0]
        )
        return {
            "treename": treename,
            "filter_name": list(self.filter_name) if self.filter_name is not None else None,
            "filter_typename": (list(self.filter_typename)
                                if self.filter_typename is not None else None),
            "expressions": ([t for t, _ in self.expressions]
                            if self.expressions is not None else None),
            "cut": self.cut[0] if self.cut else None,
            "aliases": {k: t for k, (t, _) in self.aliases.items()} or None,
            "fail_on_missing_trees": self.fail_on_missing_trees,
            "use_standard_awkward_axis": self.use_standard_awkward_axis,
        }


@dataclass(frozen=True)
class CopyQuery:
    """Copy objects (histograms) whose names match a name, glob or ``/regex/``: ROOT output."""

    pattern: str

    def to_json(self) -> dict[str, Any]:
        return {"copy_histograms": self.pattern}


@dataclass(frozen=True)
class Selection:
    queries: tuple[TreeQuery | CopyQuery, ...]

    @property
    def tree_queries(self) -> tuple[TreeQuery, ...]:
        return tuple(q for q in self.queries if isinstance(q, TreeQuery))

    @property
    def copy_queries(self) -> tuple[CopyQuery, ...]:
        return tuple(q for q in self.queries if isinstance(q, CopyQuery))

    def to_json(self) -> str:
        """Canonical JSON: equal selections give equal text (used for cache keys)."""
        return json.dumps([q.to_json() for q in self.queries], sort_keys=True,
                          separators=(",", ":"))


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SelectionError(f"must be a non-empty string, not {_kind(value)}", field=where)
    if len(value) > MAX_NAME:
        raise SelectionError(f"is longer than {MAX_NAME} characters", field=where)
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (_string(value, where),)
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise SelectionError(f"must be a string or a list of at most {MAX_LIST} strings",
                             field=where)
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(value))


def _trees(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        raise SelectionError("is required: name the tree or RNTuple to read", field=where)
    if isinstance(value, dict):
        if not value:
            raise SelectionError("must name at least one tree", field=where)
        return tuple((_string(k, where), _string(v, f"{where}[{k!r}]")) for k, v in value.items())
    names = _strings(value, where)
    if not names:
        raise SelectionError("must name at least one tree", field=where)
    return tuple((n, n) for n in names)


def _tree_query(item: dict[str, Any], where: str) -> TreeQuery:
    unknown = sorted(set(item) - set(TREE_KEYS))
    if unknown:
        raise SelectionError(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(TREE_KEYS)}",
                             field=where)
    aliases_in = item.get("aliases") or {}
    if not isinstance(aliases_in, dict):
        raise SelectionError(f"must be an object of name: expression, not {_kind(aliases_in)}",
                             field=f"{where}.aliases")
    aliases: dict[str, tuple[str, Expr]] = {}
    for name, text in aliases_in.items():
        f = f"{where}.aliases[{name!r}]"
        if not _IDENT.match(name) or "__" in name:
            raise SelectionError("alias names must be identifiers without '__'", field=f)
        aliases[name] = (text, parse_expression(text, f))
    exprs = _strings(item.get("expressions"), f"{where}.expressions")
    cut = item.get("cut")
    flags = {}
    for key in ("fail_on_missing_trees", "use_standard_awkward_axis"):
        flag = item.get(key)
        if flag is not None and not isinstance(flag, bool):
            raise SelectionError(f"must be true, false or null, not {_kind(flag)}",
                                 field=f"{where}.{key}")
        flags[key] = flag
    return TreeQuery(
        trees=_trees(item.get("treename"), f"{where}.treename"),
        filter_name=_strings(item.get("filter_name"), f"{where}.filter_name"),
        filter_typename=_strings(item.get("filter_typename"), f"{where}.filter_typename"),
        expressions=None if exprs is None else tuple(
            (t, parse_expression(t, f"{where}.expressions[{i}]")) for i, t in enumerate(exprs)),
        cut=None if cut is None else (cut, parse_expression(cut, f"{where}.cut")),
        aliases=aliases,
        fail_on_missing_trees=bool(flags["fail_on_missing_trees"]),
        use_standard_awkward_axis=flags["use_standard_awkward_axis"],
    )


def _copy_query(item: dict[str, Any], where: str) -> CopyQuery:
    extra = sorted(set(item) - {"copy_histograms"})
    if extra:
        raise SelectionError(f"a copy query takes only 'copy_histograms', not {extra[0]!r}",
                             field=where)
    pattern = _string(item["copy_histograms"], f"{where}.copy_histograms")
    if pattern.startswith("/") and pattern.rstrip("ims").endswith("/") and len(pattern) > 1:
        try:
            re.compile(pattern[1:pattern.rstrip("ims").rfind("/")])
        except re.error as err:
            raise SelectionError(f"bad regular expression: {err}",
                                 field=f"{where}.copy_histograms") from None
    return CopyQuery(pattern)


def parse_selection(selection: str | list[Any] | dict[str, Any]) -> Selection:
    """Parse and validate an ``uproot-raw`` selection (JSON text or already-decoded)."""
    data: Any = selection
    if isinstance(selection, str | bytes):
        if len(selection) > MAX_SELECTION_BYTES:
            raise SelectionError(f"is larger than {MAX_SELECTION_BYTES} bytes", field="selection")
        try:
            data = json.loads(selection)
        except (ValueError, RecursionError) as err:
            raise SelectionError(f"is not valid JSON: {err}", field="selection") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise SelectionError("must be a non-empty JSON list of queries", field="selection")
    if len(data) > MAX_QUERIES:
        raise SelectionError(f"has more than {MAX_QUERIES} queries", field="selection")
    queries: list[TreeQuery | CopyQuery] = []
    for i, item in enumerate(data):
        where = f"selection[{i}]"
        if not isinstance(item, dict):
            raise SelectionError(f"must be an object, not {_kind(item)}", field=where)
        if "copy_histograms" in item:
            queries.append(_copy_query(item, where))
        else:
            queries.append(_tree_query(item, where))
    if not any(isinstance(q, TreeQuery) for q in queries):
        raise SelectionError("needs at least one tree query", field="selection")
    return Selection(tuple(queries))

"""TTree and RNTuple behind one interface: names, types and chunked reads.

Contract: a :class:`Table` reads only the columns it is asked for, by exact
name (uproot's ``filter_name`` gets a callable, never a user pattern or
expression), in steps whose size bounds memory. Column types come from an
empty (0-entry) read, which costs no baskets.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak

from delivery.errors import InputError
from delivery.selection.types import ColumnType, close_matches
from transformers.source import classify

__all__ = ["Table", "find_table", "column_type"]

_KINDS = {"b": "bool", "i": "int", "u": "int", "f": "float"}


def column_type(form: Any) -> ColumnType:
    """Depth and kind of an awkward form; depth 2 marks "not usable in expressions"."""
    depth = 0
    while isinstance(form, ak.forms.ListOffsetForm | ak.forms.ListForm | ak.forms.RegularForm):
        if form.parameter("__array__") in ("string", "bytestring"):
            return ColumnType(2, "other")
        depth += 1
        form = form.content
    if isinstance(form, ak.forms.NumpyForm) and not form.inner_shape and depth <= 1:
        import numpy as np

        return ColumnType(depth, _KINDS.get(np.dtype(form.primitive).kind, "other"))
    return ColumnType(2, "other")


def find_table(directory: Any, name: str, where: str) -> Table | None:
    """The TTree or RNTuple ``name`` in ``directory``, or None if absent."""
    try:
        classes = directory.classnames()
    except Exception as exc:
        raise classify(exc, where) from exc
    wanted = {k.rsplit(";", 1)[0]: v for k, v in classes.items()}
    kind = wanted.get(name)
    if kind not in ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple"):
        return None
    try:
        return Table(directory[name], name, where)
    except Exception as exc:
        raise classify(exc, where) from exc


def table_names(directory: Any) -> list[str]:
    """Names of all TTrees and RNTuples, for "tree missing" messages."""
    return sorted({k.rsplit(";", 1)[0] for k, v in directory.classnames().items()
                   if v in ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")})


def _prime_rntuple_fields(obj: Any) -> None:
    """Fill every RNTuple field's child list in one pass.

    uproot 5.7 finds a field's children by scanning all field records, once per
    field: quadratic, 11 s for PHYSLITE's 1077 fields on every read. One pass
    over the records gives the same lists (checked by the tests) in 0.2 s. This
    touches uproot's private ``_fields`` cache; if that changes, we only lose speed.
    """
    try:
        ntuple = obj.ntuple
        records, fields = ntuple.field_records, ntuple.all_fields
        children: dict[int, list[int]] = {}
        for i, record in enumerate(records):
            if record.parent_field_id != i:
                children.setdefault(record.parent_field_id, []).append(i)

        def prime(fid: int) -> list[Any]:
            field = fields[fid]
            if field._fields is None:
                out: list[Any] = []
                for i in children.get(fid, []):
                    # anonymous fields stand for their children, as in uproot
                    out += prime(i) if fields[i].is_anonymous else [fields[i]]
                field._fields = out
            return list(field._fields)

        for fid in range(len(fields)):
            prime(fid)
    except (AttributeError, TypeError, IndexError, RecursionError):
        return


@dataclass
class Table:
    obj: Any
    name: str
    where: str

    def __post_init__(self) -> None:
        if self.is_rntuple:
            _prime_rntuple_fields(self.obj)

    @property
    def is_rntuple(self) -> bool:
        return "RNTuple" in type(self.obj).__name__

    @property
    def num_entries(self) -> int:
        return int(self.obj.num_entries)

    def all_names(self) -> list[str]:
        """Every readable name, nested ones (``a.b``) included."""
        return list(self.obj.keys())

    def top_names(self) -> list[str]:
        return list(self.obj.keys(recursive=False))

    def typenames(self) -> dict[str, str]:
        return dict(self.obj.typenames())

    def match(self, patterns: Sequence[str], field: str) -> list[str]:
        """Names matched by exact names or globs, in file order; a miss is an InputError."""
        top, every = self.top_names(), set(self.all_names())
        out: list[str] = []
        for pattern in patterns:
            if any(c in pattern for c in "*?["):
                hits = [n for n in top if fnmatch.fnmatchcase(n, pattern)]
                if not hits:
                    raise InputError(f"{self.where}: {field}: pattern {pattern!r} matches no "
                                     f"branch of {self.name!r}")
            elif pattern in every:
                hits = [pattern]
            else:
                raise InputError(f"{self.where}: no branch {pattern!r} in {self.name!r}"
                                 + close_matches(pattern, top))
            out += [h for h in hits if h not in out]
        return out

    def match_types(self, names: list[str], patterns: Sequence[str]) -> list[str]:
        types = self.typenames()
        return [n for n in names
                if any(fnmatch.fnmatchcase(types.get(n, ""), p) for p in patterns)]

    def read(self, names: Sequence[str], start: int = 0, stop: int | None = None) -> ak.Array:
        wanted = _read_set(names)
        try:
            arrays = self.obj.arrays(filter_name=wanted.__contains__, entry_start=start,
                                     entry_stop=stop, library="ak")
            return _project(arrays, names)
        except Exception as exc:
            raise self._unreadable(exc, names) from exc

    def iterate(self, names: Sequence[str], step: int) -> Iterator[ak.Array]:
        wanted = _read_set(names)
        try:
            for arrays in self.obj.iterate(filter_name=wanted.__contains__, step_size=step,
                                           library="ak"):
                yield _project(arrays, names)
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self._unreadable(exc, names) from exc

    def types(self, names: Sequence[str]) -> dict[str, ColumnType]:
        empty = self.read(names, 0, 0)
        return {n: column_type(empty[n].layout.form) for n in names}

    def bytes_per_entry(self, names: Sequence[str]) -> float:
        """Uncompressed bytes per entry of ``names`` (estimated for RNTuple)."""
        if self.is_rntuple or not self.num_entries:
            return 8.0 * max(len(names), 1) * 4
        total = sum(self.obj[n].uncompressed_bytes for n in names if n in self.obj)
        return max(total / self.num_entries, 1.0)

    def _unreadable(self, exc: Exception, names: Sequence[str]) -> Exception:
        text = str(exc)
        if isinstance(exc, NotImplementedError) or "cannot be interpreted" in text or \
                "not supported" in text.lower():
            types = self.typenames()
            listed = ", ".join(f"{n} ({types.get(n, '?')})" for n in names[:5])
            return InputError(f"{self.where}: unsupported branch type among {listed}: "
                              f"{text.splitlines()[0][:150] if text else type(exc).__name__}")
        return classify(exc, self.where)


def _read_set(names: Sequence[str]) -> frozenset[str]:
    # Exact names only: uproot reads an RNTuple sub-field ("a.b") without its siblings.
    return frozenset(names)


def _project(arrays: ak.Array, names: Sequence[str]) -> ak.Array:
    columns = {}
    for n in names:
        if n in arrays.fields:
            columns[n] = arrays[n]
        else:
            value = arrays
            for part in n.split("."):
                value = value[part]
            columns[n] = value
    return ak.zip(columns, depth_limit=1) if columns else arrays[[]]

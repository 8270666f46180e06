"""Datasets: one row per (name, finder), shared by every request that names it.

Deleting a dataset that requests still point at only marks it ``stale`` (as
ServiceX does): their status objects must keep an integer ``did_id``, and the
next submission looks the dataset up afresh and updates the row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, exists, select, update

from api.store.engine import StoreBase, utcnow
from api.store.rows import DatasetRow
from api.store.schema import datasets, requests

__all__ = ["DatasetStore", "STALE", "LOOKING"]

LOOKING = "looking"
STALE = "stale"
_UPDATABLE = frozenset({"lookup_status", "n_files", "size", "last_used", "last_updated"})
_LOOKUP_RESULT = frozenset({"lookup_status", "n_files", "size"})


def _dataset(row: Row[Any]) -> DatasetRow:
    return DatasetRow(id=row.id, name=row.name, did_finder=row.did_finder,
                      lookup_status=row.lookup_status, n_files=row.n_files, size=row.size,
                      last_used=row.last_used, last_updated=row.last_updated)


class DatasetStore(StoreBase):
    def get_or_create_dataset(self, name: str, did_finder: str) -> int:
        """The id of the dataset ``(name, did_finder)``, created if new; marks it used now."""
        now = utcnow()
        insert = self._dialect_insert(datasets).values(
            name=name, did_finder=did_finder, lookup_status=LOOKING, last_used=now)
        # Two submissions of a new dataset at once: one inserts, the other finds its row.
        insert = insert.on_conflict_do_nothing(index_elements=["name", "did_finder"])
        where = (datasets.c.name == name) & (datasets.c.did_finder == did_finder)
        with self._write() as conn:
            conn.execute(insert)
            conn.execute(update(datasets).where(where).values(last_used=now))
            return int(conn.execute(select(datasets.c.id).where(where)).scalar_one())

    def update_dataset(self, dataset_id: int, **fields: Any) -> bool:
        """Set some of lookup_status, n_files, size, last_used, last_updated.

        A new lookup result (status, file count or size) also sets ``last_updated``
        to now unless given. Returns False if there is no such dataset.
        """
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"update_dataset: unknown field(s) {', '.join(sorted(unknown))}")
        if not fields:
            return self.get_dataset(dataset_id) is not None
        if _LOOKUP_RESULT & set(fields) and "last_updated" not in fields:
            fields["last_updated"] = utcnow()
        with self._write() as conn:
            done = conn.execute(update(datasets).where(datasets.c.id == dataset_id)
                                .values(**fields))
            return bool(done.rowcount)

    def get_dataset(self, dataset_id: int) -> DatasetRow | None:
        with self._read() as conn:
            row = conn.execute(select(datasets).where(datasets.c.id == dataset_id)).first()
        return _dataset(row) if row is not None else None

    def list_datasets(self) -> list[DatasetRow]:
        with self._read() as conn:
            rows = conn.execute(select(datasets).order_by(datasets.c.id)).all()
        return [_dataset(r) for r in rows]

    def delete_dataset(self, dataset_id: int) -> bool:
        """Delete the dataset, or mark it stale if requests refer to it.

        Returns False if there was no such dataset (so deleting is idempotent).
        """
        used = exists().where(requests.c.dataset_id == dataset_id)
        with self._write() as conn:
            gone = conn.execute(delete(datasets).where(datasets.c.id == dataset_id, ~used))
            if gone.rowcount:
                return True
            marked = conn.execute(update(datasets).where(datasets.c.id == dataset_id)
                                  .values(lookup_status=STALE, last_updated=utcnow()))
            return bool(marked.rowcount)

    def _dialect_insert(self, table: Any) -> Any:
        """``INSERT`` with ``ON CONFLICT`` support for this backend (sqlite or postgresql)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

"""Aggregates for the dashboard and /metrics: counted by the database, read in one query."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, select

from api.store.engine import StoreBase
from api.store.schema import requests, results
from delivery.messages import SUCCESS

__all__ = ["SummaryStore", "Totals"]


class Totals(NamedTuple):
    """Sums over a request's successful files."""

    events_out: int
    events_in: int
    total_bytes: int
    seconds: float


class SummaryStore(StoreBase):
    def status_counts(self) -> dict[str, int]:
        """How many requests are in each status (statuses with none are absent)."""
        with self._read() as conn:
            rows = conn.execute(select(requests.c.status, func.count())
                                .group_by(requests.c.status)).all()
        return {str(status): int(n) for status, n in rows}

    def success_totals(self, owner: str | None = None,
                       request_id: str | None = None) -> dict[str, Totals]:
        """:class:`Totals` per request: one request, one owner's, or (both None) all."""
        query = (select(results.c.request_id, func.sum(results.c.events_out),
                        func.sum(results.c.events_in), func.sum(results.c.total_bytes),
                        func.sum(results.c.seconds))
                 .where(results.c.status == SUCCESS).group_by(results.c.request_id))
        if request_id is not None:
            query = query.where(results.c.request_id == request_id)
        elif owner is not None:
            query = query.join(requests, requests.c.request_id == results.c.request_id) \
                .where(requests.c.owner == owner)
        with self._read() as conn:
            # PostgreSQL's SUM of integers is NUMERIC (Decimal in Python): back to int/float.
            return {r[0]: Totals(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0),
                                 float(r[4] or 0)) for r in conn.execute(query)}

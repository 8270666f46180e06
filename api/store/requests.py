"""The repository: requests, their files, and one verdict per file.

Every writer first locks the request's row (a no-op on SQLite, where
``BEGIN IMMEDIATE`` already serialises writers). Under that lock a recorder can
check "all files have a result" and set Complete in the same transaction
without write skew, and ``created_at`` values of one request increase strictly
in commit order, so a client polling ``later_than`` its newest ``created_at``
can never skip a result committed just after its poll.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, case, delete, exists, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from api.store.datasets import DatasetStore
from api.store.engine import utcnow
from api.store.rows import Counts, RequestRow, ResultRow
from api.store.schema import (
    COMPLETE,
    FINAL_STATUSES,
    STATUSES,
    SUBMITTED,
    request_files,
    requests,
    results,
)
from api.store.summaries import SummaryStore
from api.store.users import UserStore
from delivery.messages import FAILURE, SUCCESS, FileReport

__all__ = ["RequestStore"]

_TICK = timedelta(microseconds=1)
_FINAL = sorted(FINAL_STATUSES)
# The fields of a verdict; a report identical in all of them changes nothing.
_VERDICT = ("status", "object_name", "total_bytes", "sha256", "events_in", "events_out",
            "seconds", "error")


def _count(table: Any, *where: ColumnElement[bool]) -> Any:
    return (select(func.count()).select_from(table)
            .where(table.c.request_id == requests.c.request_id, *where).scalar_subquery())


# Correlated subqueries: counts come from rows at read time, never from counters.
_REQUEST_VIEW = select(
    requests,
    _count(request_files).label("n_listed"),
    _count(results, results.c.status == SUCCESS).label("n_completed"),
    _count(results, results.c.status == FAILURE).label("n_failed"),
)


def _request(row: Row[Any]) -> RequestRow:
    c = Counts.derive(max(row.n_listed, row.n_files or 0), row.n_completed, row.n_failed)
    fields = {k: getattr(row, k) for k in requests.c.keys()}
    return RequestRow(**fields, files=c.files, completed=c.completed, failed=c.failed,
                      remaining=c.remaining)


class RequestStore(DatasetStore, UserStore, SummaryStore):
    """The request store on SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://...``).

    Creates its tables on construction. Safe to share between threads. Database
    outages surface as :class:`delivery.errors.TransientError`.
    """

    # -- requests ----------------------------------------------------------

    def create_request(self, *, did: str, selection: str, codegen: str, result_format: str,
                       result_destination: str = "object-store", title: str | None = None,
                       dataset_id: int | None = None, owner: str | None = None,
                       cache_key: str | None = None, reused_from: str | None = None,
                       n_files: int | None = None, status: str = SUBMITTED,
                       failure_info: str | None = None, request_id: str | None = None) -> str:
        """Insert a request and return its id (a new UUID unless given)."""
        _check_status(status)
        rid = request_id or str(uuid.uuid4())
        now = utcnow()
        with self._write() as conn:
            conn.execute(requests.insert().values(
                request_id=rid, title=title, did=did, dataset_id=dataset_id,
                selection=selection, codegen=codegen, result_format=result_format,
                result_destination=result_destination, status=status, submit_time=now,
                finish_time=now if status in FINAL_STATUSES else None,
                failure_info=failure_info, owner=owner, reused_from=reused_from,
                cache_key=cache_key, n_files=n_files))
        return rid

    def add_files(self, request_id: str, files: list[tuple[int, list[str]]], *,
                  final: bool = True) -> None:
        """Add ``(file_id, replica URLs)`` pairs. Add them before publishing their tasks.

        ``final`` (the default) says the lookup is done: ``n_files`` becomes the
        number of files added. With ``final=False`` more batches follow and the
        request cannot complete before a final call (or a preset ``n_files``).
        """
        rows = [{"request_id": request_id, "file_id": fid, "replicas": json.dumps(list(urls)),
                 "path": urls[0] if urls else ""} for fid, urls in files]
        with self._write() as conn:
            self._lock_request(conn, request_id)
            if rows:
                conn.execute(request_files.insert(), rows)
            if final:
                listed = select(func.count()).where(request_files.c.request_id == request_id)
                conn.execute(update(requests).where(requests.c.request_id == request_id)
                             .values(n_files=listed.scalar_subquery()))
            self._complete_if_done(conn, request_id)

    def set_status(self, request_id: str, status: str, failure_info: str | None = None) -> bool:
        """Move the request to ``status``; returns whether anything changed.

        Final statuses are sticky: a request that is Complete, Fatal, Canceled or
        Bad Dataset keeps its status. The one change still allowed is filling in a
        missing ``failure_info`` by setting the same final status again.
        """
        _check_status(status)
        with self._write() as conn:
            row = self._lock_request(conn, request_id)
            if row is None:
                return False
            current, info = row
            values: dict[str, Any] = {}
            if current in FINAL_STATUSES:
                if status == current and failure_info and not info:
                    values["failure_info"] = failure_info
            else:
                if status != current:
                    values["status"] = status
                    if status in FINAL_STATUSES:
                        values["finish_time"] = utcnow()
                if failure_info is not None and failure_info != info:
                    values["failure_info"] = failure_info
            if not values:
                return False
            conn.execute(update(requests).where(requests.c.request_id == request_id)
                         .values(**values))
            return True

    def get(self, request_id: str) -> RequestRow | None:
        with self._read() as conn:
            row = conn.execute(_REQUEST_VIEW.where(requests.c.request_id == request_id)).first()
        return _request(row) if row is not None else None

    def list_requests(self, owner: str | None = None) -> list[RequestRow]:
        """All requests (or one owner's), oldest first."""
        query = _REQUEST_VIEW.order_by(requests.c.submit_time, requests.c.request_id)
        if owner is not None:
            query = query.where(requests.c.owner == owner)
        with self._read() as conn:
            return [_request(r) for r in conn.execute(query)]

    def counts(self, request_id: str) -> Counts:
        """Files, completed, failed and remaining (never negative); zeros if unknown."""
        row = self.get(request_id)
        return row.counts if row is not None else Counts(0, 0, 0, 0)

    def delete_request(self, request_id: str) -> bool:
        """Remove the request, its files and results; False if it was already gone."""
        with self._write() as conn:
            if self._lock_request(conn, request_id) is None:
                return False
            for table in (results, request_files, requests):
                conn.execute(delete(table).where(table.c.request_id == request_id))
            return True

    def find_reusable(self, cache_key: str) -> RequestRow | None:
        """The newest Complete request with this key whose every file succeeded.

        Only original requests qualify (not reuses of one), so a chain of reuses
        always points at the request that owns the outputs.
        """
        view = _REQUEST_VIEW.subquery()
        query = (select(view).where(view.c.cache_key == cache_key, view.c.status == COMPLETE,
                                    view.c.reused_from.is_(None), view.c.n_failed == 0,
                                    view.c.n_listed > 0, view.c.n_completed == view.c.n_listed)
                 .order_by(view.c.finish_time.desc()).limit(1))
        with self._read() as conn:
            row = conn.execute(query).first()
        return _request(row) if row is not None else None

    # -- files and results ---------------------------------------------------

    def file_paths(self, request_id: str) -> dict[int, str]:
        """``{file_id: display path}`` of the request's files."""
        with self._read() as conn:
            rows = conn.execute(select(request_files.c.file_id, request_files.c.path)
                                .where(request_files.c.request_id == request_id)).all()
        return {r.file_id: r.path for r in rows}

    def record(self, report: FileReport) -> bool:
        """Upsert one file's verdict; returns whether the stored row changed (see
        :meth:`record_verdict`)."""
        return self.record_verdict(report)[0]

    def record_verdict(self, report: FileReport) -> tuple[bool, str | None]:
        """Upsert one file's verdict; returns whether the stored row changed and the
        file's status before, read under the same lock (None: no verdict yet).

        Success wins: a failure after a success is ignored, a success after a
        failure replaces it. An identical repeat changes nothing. ``created_at``
        moves only when the row is created or its status changes. A report for a
        deleted request is dropped (False); one for a file never added raises.
        """
        if report.status not in (SUCCESS, FAILURE):
            raise ValueError(f"report status must be {SUCCESS!r} or {FAILURE!r}, "
                             f"not {report.status!r}")
        rid = report.request_id
        with self._write() as conn:
            if self._lock_request(conn, rid) is None:
                return False, None
            before = conn.execute(select(results.c.status).where(
                results.c.request_id == rid, results.c.file_id == report.file_id)).scalar()
            stamp = self._next_stamp(conn, rid)
            values = {k: getattr(report, k) for k in _VERDICT}
            insert = self._dialect_insert(results).values(
                request_id=rid, file_id=report.file_id, created_at=stamp, **values)
            new = insert.excluded
            changes = {k: new[k] for k in _VERDICT}
            changes["created_at"] = case((results.c.status != new.status, new.created_at),
                                         else_=results.c.created_at)
            upsert = insert.on_conflict_do_update(
                index_elements=["request_id", "file_id"], set_=changes,
                where=and_(or_(results.c.status == FAILURE, new.status == SUCCESS),
                           or_(*(results.c[k].is_distinct_from(new[k]) for k in _VERDICT))))
            if self.dialect == "postgresql":
                # SQLAlchemy adds RETURNING here, which makes rowcount unreliable;
                # a returned row means inserted or updated (the WHERE held).
                changed = conn.execute(upsert.returning(results.c.id)).first() is not None
            else:
                changed = bool(conn.execute(upsert).rowcount)  # sqlite3_changes(): rows written
            self._complete_if_done(conn, rid)
            return changed, None if before is None else str(before)

    def file_done(self, request_id: str, file_id: int) -> bool:
        """Whether the file already has its success row (a redelivery can skip it)."""
        with self._read() as conn:
            found = conn.execute(select(results.c.id).where(
                results.c.request_id == request_id, results.c.file_id == file_id,
                results.c.status == SUCCESS)).first()
        return found is not None

    def results(self, request_id: str, later_than: datetime | None = None,
                status: str | None = None) -> list[ResultRow]:
        """Verdicts in ``created_at`` order, only those strictly after ``later_than``."""
        with self._read() as conn:
            join = results.outerjoin(request_files, and_(
                request_files.c.request_id == results.c.request_id,
                request_files.c.file_id == results.c.file_id))
            query = (select(results, request_files.c.path).select_from(join)
                     .where(results.c.request_id == request_id)
                     .order_by(results.c.created_at, results.c.id))
            if later_than is not None:
                query = query.where(results.c.created_at > later_than)
            if status is not None:
                query = query.where(results.c.status == status)
            rows = conn.execute(query).all()
        return [ResultRow(**r._asdict()) for r in rows]

    # -- internals -------------------------------------------------------------

    @staticmethod
    def _lock_request(conn: Connection, request_id: str) -> tuple[str, str | None] | None:
        """``(status, failure_info)`` of the request, now locked; None if there is none."""
        # FOR NO KEY UPDATE: serialises the request's writers but, unlike FOR UPDATE,
        # does not block the key-share locks taken by inserts that reference the row.
        query = (select(requests.c.status, requests.c.failure_info)
                 .where(requests.c.request_id == request_id).with_for_update(key_share=True))
        row = conn.execute(query).first()
        return None if row is None else (row.status, row.failure_info)

    @staticmethod
    def _next_stamp(conn: Connection, request_id: str) -> datetime:
        # Strictly after the request's newest result: the clock may repeat a
        # microsecond or step back, and "later_than" pollers rely on the order.
        newest = conn.execute(select(func.max(results.c.created_at))
                              .where(results.c.request_id == request_id)).scalar()
        now = utcnow()
        return max(now, newest + _TICK) if newest is not None else now

    @staticmethod
    def _complete_if_done(conn: Connection, request_id: str) -> None:
        # One conditional UPDATE: every listed file has a verdict, the lookup is done
        # (n_files known and all listed), and the request is not already final.
        mine = request_files.c.request_id == request_id
        listed = select(func.count()).where(mine).scalar_subquery()
        unfinished = exists().where(mine, ~exists().where(
            results.c.request_id == request_files.c.request_id,
            results.c.file_id == request_files.c.file_id))
        conn.execute(update(requests).where(
            requests.c.request_id == request_id, requests.c.status.not_in(_FINAL),
            requests.c.n_files.is_not(None), listed > 0, listed >= requests.c.n_files,
            ~unfinished).values(status=COMPLETE, finish_time=utcnow()))


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")

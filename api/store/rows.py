"""What the request store hands out: frozen snapshots, never live database objects.

Frozen dataclasses (not ORM instances) so callers in any thread can keep and
pass them around without a session, and cannot write to the store by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Counts", "RequestRow", "ResultRow", "DatasetRow"]


@dataclass(frozen=True)
class Counts:
    """Per-request file counts, derived from result rows at read time."""

    files: int
    completed: int
    failed: int
    remaining: int

    @classmethod
    def derive(cls, files: int, completed: int, failed: int) -> Counts:
        # Clamped so that no inconsistency (e.g. files still being added) shows a negative.
        return cls(files, completed, failed, max(files - completed - failed, 0))


@dataclass(frozen=True)
class RequestRow:
    """One transformation request with its counts, as of one read."""

    request_id: str
    title: str | None
    did: str
    dataset_id: int | None
    selection: str
    codegen: str
    result_format: str
    result_destination: str
    status: str
    submit_time: datetime
    finish_time: datetime | None
    failure_info: str | None
    owner: str | None
    reused_from: str | None
    cache_key: str | None
    n_files: int | None
    files: int
    completed: int
    failed: int
    remaining: int

    @property
    def counts(self) -> Counts:
        return Counts(self.files, self.completed, self.failed, self.remaining)


@dataclass(frozen=True)
class ResultRow:
    """One file's verdict; ``path`` is the file's display path."""

    id: int
    request_id: str
    file_id: int
    status: str
    object_name: str | None
    total_bytes: int
    sha256: str | None
    events_in: int
    events_out: int
    seconds: float
    error: str | None
    created_at: datetime
    path: str | None


@dataclass(frozen=True)
class DatasetRow:
    id: int
    name: str
    did_finder: str
    lookup_status: str
    n_files: int | None
    size: int | None
    last_used: datetime | None
    last_updated: datetime | None

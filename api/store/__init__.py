"""The request store: requests, their files, per-file results and datasets, in SQL.

SQLite by default (``sqlite:///path``, WAL, safe across threads and processes),
PostgreSQL in production (``postgresql://...``, psycopg 3); one code path for
both through SQLAlchemy Core. :class:`RequestStore` creates its tables itself.

The contract
------------
* **Counts are derived, never stored.** ``files`` is the number of listed files
  (or the announced ``n_files`` if larger), ``completed`` / ``failed`` are
  ``COUNT`` over result rows, ``remaining = max(files - completed - failed, 0)``.
* **A report is an upsert on (request, file).** Success wins over failure; an
  identical repeat, a redelivery, or the same report from many threads or
  connections at once leaves exactly one row and the counts unchanged.
  :meth:`RequestStore.record` returns whether the row changed.
* **created_at** (naive UTC, microseconds) is set when a row is created or its
  status changes, and strictly increases within a request in commit order:
  ``results(later_than=t)`` (strictly greater) never skips a late commit.
* **Completion is automatic and atomic.** When every file of a request whose
  lookup is done has a result, the recording transaction sets Complete. Final
  statuses (Complete, Fatal, Canceled, Bad Dataset) are sticky: a completion
  that arrives after Cancel leaves Canceled.
* **A reused request** (``reused_from`` set) names the request whose outputs it
  was served from; it has its own files, results and objects (copied at submit).
  :meth:`RequestStore.find_reusable` only returns original requests that
  completed with no failed file.
* **Outages are transient.** A database that cannot be reached or drops the
  connection raises :class:`delivery.errors.TransientError` (one line; the API
  answers 503). Integrity errors, i.e. our own bugs, propagate unchanged.
* **Users and refresh tokens** live here too; only a token's sha256 is stored.
"""

from api.store.requests import RequestStore
from api.store.rows import Counts, DatasetRow, RequestRow, ResultRow
from api.store.schema import FILE_LIST, FINAL_STATUSES, STATUSES
from api.store.users import TokenInfo, User

__all__ = [
    "RequestStore",
    "Counts",
    "RequestRow",
    "ResultRow",
    "DatasetRow",
    "STATUSES",
    "FINAL_STATUSES",
    "FILE_LIST",
    "User",
    "TokenInfo",
]

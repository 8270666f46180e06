"""The request store's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Only portable column types are used so that one ``MetaData`` creates the same
schema on both backends. Times are naive UTC (``TIMESTAMP WITHOUT TIME ZONE``):
the ServiceX client compares ``created_at`` as naive UTC text, so storing a zone
would only invite conversions. Counts are never stored: they are ``COUNT`` over
``results`` rows, which is what makes a redelivered report harmless.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from delivery.messages import FAILURE, SUCCESS

__all__ = [
    "SUBMITTED", "LOOKUP", "PENDING_LOOKUP", "RUNNING", "COMPLETE", "FATAL", "CANCELED",
    "BAD_DATASET", "STATUSES", "FINAL_STATUSES", "FILE_LIST",
    "metadata", "datasets", "requests", "request_files", "results", "users", "tokens",
]

# The exact status strings the ServiceX client validates; anything else breaks it.
SUBMITTED = "Submitted"
LOOKUP = "Lookup"
PENDING_LOOKUP = "Pending Lookup"
RUNNING = "Running"
COMPLETE = "Complete"
FATAL = "Fatal"
CANCELED = "Canceled"
BAD_DATASET = "Bad Dataset"
STATUSES = (SUBMITTED, LOOKUP, PENDING_LOOKUP, RUNNING, COMPLETE, FATAL, CANCELED, BAD_DATASET)
# Once a request reaches one of these it never leaves it (late reports cannot revive it).
FINAL_STATUSES = frozenset({COMPLETE, FATAL, CANCELED, BAD_DATASET})

FILE_LIST = "file-list"  # the ``did`` and dataset name of a request given as a list of URLs


def _in(column: str, values: tuple[str, ...]) -> str:
    # Literal SQL for a CHECK constraint; the values are our own constants, never user input.
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = MetaData()

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),  # the DID, or "file-list"
    Column("did_finder", String(64), nullable=False),  # rucio, local, root, https, file-list
    Column("lookup_status", Text, nullable=False),  # complete, looking, stale, or an error
    Column("n_files", Integer),
    Column("size", BigInteger),
    Column("last_used", DateTime),
    Column("last_updated", DateTime),
    # One row per (name, finder): get_or_create relies on it to stay race-free.
    UniqueConstraint("name", "did_finder", name="uq_datasets_name_finder"),
)

requests = Table(
    "requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("title", Text),
    Column("did", Text, nullable=False),
    Column("dataset_id", Integer, ForeignKey("datasets.id", name="fk_requests_dataset")),
    Column("selection", Text, nullable=False),  # canonical JSON
    Column("codegen", String(64), nullable=False),
    Column("result_format", String(64), nullable=False),
    Column("result_destination", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("submit_time", DateTime, nullable=False),
    Column("finish_time", DateTime),
    Column("failure_info", Text),
    Column("owner", Text),
    # Not a foreign key: the earlier request may be deleted while this row stays.
    Column("reused_from", String(64)),
    Column("cache_key", String(128)),
    Column("n_files", Integer),  # known once the dataset lookup is done
    CheckConstraint(_in("status", STATUSES), name="ck_requests_status"),
    Index("ix_requests_cache_key", "cache_key"),
    Index("ix_requests_owner", "owner"),
)

request_files = Table(
    "request_files",
    metadata,
    Column("request_id", String(64), ForeignKey("requests.request_id",
                                                 name="fk_request_files_request"),
           primary_key=True),
    Column("file_id", Integer, primary_key=True, autoincrement=False),
    Column("replicas", Text, nullable=False),  # JSON list of URLs, in the order to try
    Column("path", Text, nullable=False),  # for display: the first replica
)

results = Table(
    "results",
    metadata,
    # A surrogate id only to give each entry the "id" the results endpoint shows.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("file_id", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("object_name", Text),
    Column("total_bytes", BigInteger, nullable=False, default=0),
    Column("sha256", String(64)),
    Column("events_in", BigInteger, nullable=False, default=0),
    Column("events_out", BigInteger, nullable=False, default=0),
    Column("seconds", Float, nullable=False, default=0.0),
    Column("error", Text),
    Column("created_at", DateTime, nullable=False),
    # The upsert's conflict target: at most one verdict per file, however often reported.
    UniqueConstraint("request_id", "file_id", name="uq_results_request_file"),
    # A report for a file that was never added is our bug: let the database refuse it.
    ForeignKeyConstraint(["request_id", "file_id"],
                         ["request_files.request_id", "request_files.file_id"],
                         name="fk_results_file"),
    CheckConstraint(_in("status", (SUCCESS, FAILURE)), name="ck_results_status"),
    # The results endpoint's query: one request, newer than a time, in time order.
    Index("ix_results_request_created", "request_id", "created_at"),
)

users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    # The public half of a refresh token (``dlv_<id>_<secret>``): lets an operator
    # list and revoke a token without ever seeing or storing its secret.
    Column("id", String(32), primary_key=True),
    Column("user_name", String(128), ForeignKey("users.name", name="fk_tokens_user",
                                                 ondelete="CASCADE"), nullable=False),
    Column("digest", String(64), nullable=False),  # sha256 of the whole token, hex
    Column("label", Text),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime),
    Column("last_used", DateTime),
    Index("ix_tokens_user", "user_name"),
)

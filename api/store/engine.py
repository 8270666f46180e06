"""Engine set-up, transactions and error mapping shared by the store's parts.

SQLite needs care to behave like a server database under threads:

* WAL lets readers run while one writer writes; the busy timeout makes a second
  writer wait instead of failing with "database is locked";
* every write transaction starts with ``BEGIN IMMEDIATE``. A deferred
  transaction that reads and then writes cannot wait for the lock in WAL mode
  (SQLite answers SQLITE_BUSY at once, since its snapshot is stale), so two
  concurrent recorders would fail instead of queueing;
* foreign keys are off by default in SQLite and are switched on per connection.

PostgreSQL writers lock the request's row first (``FOR NO KEY UPDATE``), which
serialises the writers of one request and orders every lock the same way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import StaticPool

from api.store.schema import metadata
from delivery.errors import TransientError

__all__ = ["StoreBase", "utcnow", "make_engine"]

BUSY_TIMEOUT_S = 30.0  # how long an SQLite writer waits for another one
CONNECT_TIMEOUT_S = 10  # PostgreSQL: fail (503) rather than hang on a black-holed host
_IMMEDIATE = "delivery_immediate"  # our execution option: this transaction will write
_SCHEMA_LOCK = 0x64656C6976  # advisory-lock key: concurrent API starts create tables once

# SQLite reports its SQL mistakes as OperationalError too; those are bugs, not outages.
_SQLITE_BUGS = ("no such ", "syntax error", "near \"", "already exists", "has no column",
                "ambiguous column", "misuse")


def utcnow() -> datetime:
    """Naive UTC, microsecond precision: what the tables and the ServiceX client use."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: str | URL) -> Engine:
    """An engine for SQLite or PostgreSQL (``postgresql://`` means psycopg 3)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")  # the driver we depend on
        args: dict[str, Any] = {}
        if "connect_timeout" not in u.query:
            args["connect_timeout"] = CONNECT_TIMEOUT_S
        return create_engine(u, pool_pre_ping=True, connect_args=args)
    if backend != "sqlite":
        raise ValueError(f"request store: unsupported database {u.drivername!r} "
                         "(use sqlite:/// or postgresql://)")
    sqlite_args: dict[str, Any] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
    if _is_memory(u):
        # One shared connection, or every pooled connection would see its own empty
        # database; StoreBase serialises its use with a lock.
        engine = create_engine(u, poolclass=StaticPool, connect_args=sqlite_args)
    else:
        engine = create_engine(u, pool_pre_ping=True, connect_args=sqlite_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _reason(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text_ = " ".join(str(orig).split())
    return text_[:300] if text_ else type(orig).__name__


def _is_outage(err: BaseException) -> bool:
    if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
        return True
    if isinstance(err, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool exhausted or connection lost
    if isinstance(err, sa_exc.OperationalError | sa_exc.InterfaceError):
        lowered = _reason(err).lower()
        return not any(hint in lowered for hint in _SQLITE_BUGS)
    return False


class StoreBase:
    """The engine plus the two ways in: a read and a write transaction."""

    def __init__(self, url: str | URL) -> None:
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._where = self.engine.url.render_as_string(hide_password=True)
        # Only the shared in-memory connection needs serialising; pools handle the rest.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if _is_memory(self.engine.url) else contextlib.nullcontext())
        # A write transaction even on SQLite, so two processes starting at once
        # cannot both find the tables missing and both create them.
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            metadata.create_all(conn)

    def close(self) -> None:
        """Close pooled connections (a later call reconnects)."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa_exc.SQLAlchemyError as err:
            if _is_outage(err):
                raise TransientError(
                    f"request store unavailable ({self._where}): {_reason(err)}") from err
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._lock, self._errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock, self._errors(), self.engine.connect() as conn:
            conn.execution_options(**{_IMMEDIATE: True})
            with conn.begin():
                yield conn

"""Before anything starts: does each configured service answer?

:func:`check` tries the broker (RabbitMQ), the S3 endpoint and the request
database, each with a short time-out and all at once, and returns one line for
each that does not answer or refuses us, e.g.::

    broker amqp://guest:***@127.0.0.1:5999/%2F does not answer: connection refused

Passwords never appear: URLs go through :func:`mask_url`, and S3 is named by
its endpoint only. Services left unconfigured (the embedded broker, the local
result directory) are not checked; an SQLite database only needs a writable
folder.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from delivery.config import Settings

__all__ = ["TIMEOUT", "check", "check_broker", "check_database", "check_s3", "mask_url"]

TIMEOUT = 3.0  # seconds per service: a healthy local service answers in milliseconds

# psycopg reports network failures as text only (no chained OSError).
_PG_UNREACHABLE = {"connection refused": "connection refused",
                   "timeout expired": "no answer within {t:g} s",
                   "could not translate host name": "unknown host",
                   "failed to resolve host": "unknown host",
                   "no route to host": "no route to host"}


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<malformed URL>"
    if not password:
        return url
    user, host = parts.netloc.rsplit("@", 1)
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def _reason(exc: BaseException, timeout: float) -> str:
    """A short reason: the network cause if one is buried in the chain, else the text."""
    todo, seen = [exc], set()
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, socket.gaierror):
            return "unknown host"
        if isinstance(err, (TimeoutError, socket.timeout)):
            return f"no answer within {timeout:g} s"
        if isinstance(err, OSError) and err.strerror:
            return err.strerror.lower()
        nested = [err.__cause__, err.__context__, getattr(err, "reason", None),
                  getattr(err, "exception", None), *err.args]  # pika wraps in .exception
        todo += [e for e in nested if isinstance(e, BaseException)]
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_broker(url: str, timeout: float = TIMEOUT) -> str | None:
    """None if RabbitMQ at ``url`` accepts a connection (login included), else why not."""
    import pika
    import pika.exceptions

    shown = mask_url(url)
    if url.split("://", 1)[0].lower() not in ("amqp", "amqps"):
        return f"broker {shown}: unsupported scheme (use amqp:// or amqps://)"
    try:
        params = pika.URLParameters(url)
    except Exception as err:  # noqa: BLE001 - pika raises assorted errors for bad URLs
        return f"broker {shown}: malformed URL ({type(err).__name__})"
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except (pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.AuthenticationError):
        return f"broker {shown} refused the login: check the user and password"
    except pika.exceptions.ProbableAccessDeniedError:
        return f"broker {shown} refused access: does the virtual host exist?"
    except Exception as err:  # noqa: BLE001 - every other failure means "no broker"
        return f"broker {shown} does not answer: {_reason(err, timeout)}"
    return None


def check_s3(settings: Settings, timeout: float = TIMEOUT) -> str | None:
    """None if the S3 endpoint answers a signed request with the write keys, else why not."""
    from minio import Minio
    from minio.error import S3Error

    from delivery.objects.s3 import make_http_client

    endpoint = settings.s3_endpoint or ""
    shown = f"{'https' if settings.s3_secure else 'http'}://{endpoint}"
    http = make_http_client(connect=timeout, read=timeout, retries=0,
                            cert_check=settings.s3_secure)
    try:
        client = Minio(endpoint, access_key=settings.s3_access_key or None,
                       secret_key=settings.s3_secret_key, secure=settings.s3_secure,
                       region="us-east-1", http_client=http)
        # A bucket that need not exist: answers False (404) with valid keys, 403 without.
        client.bucket_exists("delivery-preflight-check")
    except S3Error as err:
        return f"S3 {shown} refused the write keys: {err.code}"
    except ValueError as err:
        return f"S3 endpoint {endpoint!r} is malformed: {err}"
    except Exception as err:  # noqa: BLE001 - every other failure means "no S3"
        return f"S3 {shown} does not answer: {_reason(err, timeout)}"
    finally:
        http.clear()
    return None


def _sqlite_problem(database: str | None) -> str | None:
    if not database or database == ":memory:":
        return None
    folder = Path(database).expanduser().resolve().parent
    while not folder.exists():  # the first existing ancestor must let us create the rest
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    return None


def check_database(url: str, timeout: float = TIMEOUT) -> str | None:
    """None if the request database accepts a connection and a query, else why not."""
    import sqlalchemy as sa

    try:
        u = sa.engine.make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy's ArgumentError and friends
        return f"database URL {mask_url(url)} is malformed"
    shown = u.render_as_string(hide_password=True)
    backend = u.get_backend_name()
    if backend == "sqlite":
        problem = _sqlite_problem(u.database)
        return f"database {shown} cannot be created: {problem}" if problem else None
    if backend != "postgresql":
        return f"database {shown}: unsupported (use sqlite:/// or postgresql://)"
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")  # as the request store does
    engine = sa.create_engine(u, connect_args={"connect_timeout": max(1, round(timeout))})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as err:
        text = " ".join(str(err.orig).split())
        for needle, reason in _PG_UNREACHABLE.items():
            if needle in text.lower():
                return f"database {shown} does not answer: {reason.format(t=timeout)}"
        text = text.split(" failed: ")[-1]  # drop "connection to server at ... failed: "
        return f"database {shown} refused the connection: {text[:200]}"
    except Exception as err:  # noqa: BLE001
        return f"database {shown} does not answer: {_reason(err, timeout)}"
    finally:
        engine.dispose()
    return None


def check(settings: Settings, timeout: float = TIMEOUT) -> list[str]:
    """One line per configured service that does not answer (broker, S3, database order)."""
    checks: list[Callable[[], str | None]] = []
    if settings.broker_url:
        checks.append(lambda: check_broker(settings.broker_url or "", timeout))
    if settings.s3_endpoint:
        checks.append(lambda: check_s3(settings, timeout))
    checks.append(lambda: check_database(settings.database_url, timeout))
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:  # all at once: bounded wait
        answers = list(pool.map(lambda run: run(), checks))
    return [answer for answer in answers if answer]

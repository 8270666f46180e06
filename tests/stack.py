"""Whole running services for request-level tests: the embedded default and the real stack.

Both expose the same thing, a base URL of a live HTTP API, so one test suite
runs against each:

- :func:`embedded_stack`: ``delivery serve``'s own wiring in this process (SQLite,
  a local result directory, the in-process broker, N worker processes).
- :func:`real_stack`: RabbitMQ (a unique queue), S3 (moto_server), PostgreSQL (a
  fresh database), the API in this process, and ``delivery worker`` subprocesses
  that report over the API's internal endpoint with the service credential.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass
class Stack:
    url: str
    services: Any
    kind: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    running: Any = None
    tokens: dict[str, str] = field(default_factory=dict)  # user -> refresh token (auth on)

    def access(self, user: str) -> str:
        """A fresh access JWT for ``user``, through the real ``POST /token/refresh``."""
        import httpx

        got = httpx.post(f"{self.url}/token/refresh", timeout=10,
                         headers={"Authorization": f"Bearer {self.tokens[user]}"})
        got.raise_for_status()
        token: str = got.json()["access_token"]
        return token

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access(user)}"}

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "delivery", "worker"], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.workers.append(proc)
        return proc

    def worker_pids(self) -> list[int]:
        if self.kind == "embedded":
            pids: list[int] = self.running.pool.pids()
            return pids
        return [p.pid for p in self.workers if p.poll() is None]


@contextlib.contextmanager
def _http(services: Any) -> Iterator[str]:
    from werkzeug.serving import make_server

    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(services), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


AUTH_ENV = {"DELIVERY_AUTH": "on", "DELIVERY_AUTH_SECRET": secrets.token_urlsafe(48)}
USERS = {"alice": False, "bob": False, "admin": True}  # name -> admin


def _users(services: Any) -> dict[str, str]:
    """Create the test users and one refresh token each."""
    out = {}
    for name, admin in USERS.items():
        services.store.create_user(name, admin=admin)
        out[name] = services.store.issue_token(name, label="tests")
    return out


@contextlib.contextmanager
def embedded_stack(tmp: Path, roots: list[Path], workers: int = 2,
                   auth: bool = False) -> Iterator[Stack]:
    from api.serve import build_services, start_background
    from delivery.config import Settings

    env = {"DELIVERY_STATE_DIR": str(tmp / "state"), **(AUTH_ENV if auth else {})}
    settings = Settings.from_env(env, allowed_roots=tuple(str(r) for r in roots))
    services = build_services(settings)
    running = start_background(services, workers)
    try:
        with _http(services) as url:
            yield Stack(url, services, "embedded", running=running,
                        tokens=_users(services) if auth else {})
    finally:
        running.close()


@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"delivery_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # noqa: BLE001 - any failure here means "no PostgreSQL"
        skip_or_fail(f"PostgreSQL at 127.0.0.1:5432 unavailable: {err}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _rabbit_or_skip(url: str) -> None:
    try:
        import pika

        pika.BlockingConnection(pika.URLParameters(url)).close()
    except Exception as err:  # noqa: BLE001
        skip_or_fail(f"RabbitMQ at {url} unavailable: {err}")


@contextlib.contextmanager
def real_stack(tmp: Path, roots: list[Path], s3_endpoint: str,
               workers: int = 2, auth: bool = False) -> Iterator[Stack]:
    from api.serve import build_services, start_background
    from delivery.config import Settings

    broker_url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    _rabbit_or_skip(broker_url)
    token = secrets.token_urlsafe(24)
    with _postgres_database() as database_url:
        env = {
            "DELIVERY_STATE_DIR": str(tmp / "state"),
            "DELIVERY_DATABASE_URL": database_url,
            "DELIVERY_BROKER_URL": broker_url,
            "DELIVERY_QUEUE": f"test.{uuid.uuid4().hex}",
            "DELIVERY_S3_ENDPOINT": s3_endpoint.split("://", 1)[1],
            "DELIVERY_S3_ACCESS_KEY": "writer", "DELIVERY_S3_SECRET_KEY": "writer-secret",
            "DELIVERY_S3_READ_ACCESS_KEY": "reader",
            "DELIVERY_S3_READ_SECRET_KEY": "reader-secret",
            "DELIVERY_ALLOWED_ROOTS": os.pathsep.join(str(r) for r in roots),
            "DELIVERY_SERVICE_TOKEN": token,
            **(AUTH_ENV if auth else {}),
        }
        settings = Settings.from_env(env)
        services = build_services(settings)
        running = start_background(services, 0)
        try:
            with _http(services) as url:
                child_env = {**os.environ, **env, "DELIVERY_API_URL": url,
                             "PYTHONPATH": str(REPO)}
                stack = Stack(url, services, "real", env=child_env, running=running,
                              tokens=_users(services) if auth else {})
                for _ in range(workers):
                    stack.start_worker()
                try:
                    yield stack
                finally:
                    for proc in stack.workers:
                        proc.terminate()
                    for proc in stack.workers:
                        try:
                            proc.wait(timeout=20)
                        except subprocess.TimeoutExpired:
                            proc.kill()
        finally:
            running.close()
            _delete_queues(services.broker)
            services.broker.close()


def _delete_queues(broker: Any) -> None:
    delete = getattr(broker, "delete_queues", None)
    if delete is not None:
        with contextlib.suppress(Exception):
            delete()


@contextlib.contextmanager
def stack_for(request: Any, tmp: Path, roots: list[Path]) -> Iterator[Stack]:
    """The stack a ``params=["embedded", "real"]`` fixture asks for (``request.param``)."""
    if request.param == "embedded":
        with embedded_stack(tmp, roots) as s:
            yield s
    else:
        with real_stack(tmp, roots, request.getfixturevalue("s3_endpoint")) as s:
            yield s

"""The probes: /healthz (liveness) and /readyz (database and broker), public even with auth on.

On the embedded default (SQLite, in-process broker) and on the real stack
(PostgreSQL, RabbitMQ). Outages are real ones: a broker URL at a closed port,
a database engine pointed at a closed port, and a PostgreSQL database dropped
under a running API.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port
from stack import PG_ADMIN, real_stack

from api.app import create_app
from api.serve import build_services
from api.services import Services
from api.store.engine import make_engine
from delivery.broker import open_broker
from delivery.config import Settings


def _embedded(tmp: Path, **overrides: Any) -> Services:
    return build_services(Settings.from_env({"DELIVERY_STATE_DIR": str(tmp / "state")},
                                            **overrides))


def _get(services: Services, path: str) -> tuple[int, dict[str, Any]]:
    response = create_app(services).test_client().get(path)
    return response.status_code, response.get_json()


def test_embedded_default_is_live_and_ready(tmp_path: Path) -> None:
    services = _embedded(tmp_path)
    assert _get(services, "/healthz") == (200, {"status": "ok"})
    assert _get(services, "/readyz") == (
        200, {"status": "ready", "checks": {"database": "ok", "broker": "ok"}})


def test_probes_need_no_token_with_auth_on(tmp_path: Path) -> None:
    services = _embedded(tmp_path, auth=True, auth_secret=secrets.token_urlsafe(48))
    client = create_app(services).test_client()
    assert client.get("/servicex/transformation").status_code == 401  # auth really is on
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_unreachable_database_is_named(tmp_path: Path) -> None:
    services = _embedded(tmp_path)
    port = free_port()
    # The store connected at start-up; now its database stops answering.
    services.store.engine = make_engine(f"postgresql://delivery@127.0.0.1:{port}/gone")
    status, body = _get(services, "/readyz")
    assert status == 503
    assert body["down"] == ["database"]
    assert body["checks"] == {"database": "down", "broker": "ok"}
    assert str(port) not in str(body)  # the public answer does not describe the inside
    assert _get(services, "/healthz")[0] == 200  # liveness does not depend on it


@pytest.mark.integration
def test_real_stack_ready_then_each_outage_named(tmp_path: Path, s3_endpoint: str) -> None:
    with real_stack(tmp_path, [tmp_path], s3_endpoint, workers=0) as stack:
        response = httpx.get(f"{stack.url}/readyz", timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"database": "ok", "broker": "ok"}

        # RabbitMQ at a port where nothing listens.
        closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
        dead_broker = open_broker(closed, f"test.{uuid.uuid4().hex}")
        try:
            status, body = _get(dataclasses.replace(stack.services, broker=dead_broker),
                                "/readyz")
        finally:
            dead_broker.close()
        assert status == 503
        assert body["down"] == ["broker"]
        assert body["checks"] == {"database": "ok", "broker": "down"}

        # The PostgreSQL database disappears under the running API.
        _drop_database(stack.services.store.engine.url.database)
        response = httpx.get(f"{stack.url}/readyz", timeout=30)
        assert response.status_code == 503
        assert response.json()["down"] == ["database"]
        assert httpx.get(f"{stack.url}/healthz", timeout=30).status_code == 200


def _drop_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()

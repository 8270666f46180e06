"""Probes for an orchestrator: ``GET /healthz`` (liveness) and ``GET /readyz`` (readiness).

Both are public (no token; listed in :data:`api.auth.PUBLIC`).

``/healthz``
    200 ``{"status": "ok"}`` whenever this process answers HTTP, and nothing
    more on purpose: a liveness probe that also failed on a database outage
    would have Kubernetes restart every API pod at once, which cures nothing
    and drops every long poll.

``/readyz``
    ``SELECT 1`` through the request store's engine and the broker's queue
    depth (one cheap round trip each). 200 ``{"status": "ready", "checks":
    {"database": "ok", "broker": "ok"}}`` when both answer; otherwise 503 with
    ``"down"`` naming each dependency that did not (``["database"]``,
    ``["broker"]`` or both), so the pod leaves its Service's endpoints while a
    dependency is down and returns by itself. The reason (host, port, driver
    message) goes to the log only: this route is unauthenticated and must not
    describe the inside of the deployment to anyone who asks.

Each check is bounded by its client's own timeouts (PostgreSQL
``connect_timeout``, pika's socket timeout); a probe whose own timeout is
shorter simply counts the slow answer as "not ready", which is right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from api.services import Services

__all__ = ["blueprint", "readiness"]

log = logging.getLogger("delivery.health")
blueprint = Blueprint("health", __name__)


def _database(services: Services) -> None:
    with services.store.engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()


def _broker(services: Services) -> None:
    services.broker.depth()


_CHECKS: dict[str, Callable[[Services], None]] = {"database": _database, "broker": _broker}


def readiness(services: Services) -> tuple[list[str], dict[str, str]]:
    """(dependencies that are down, each dependency's state: "ok" or "down")."""
    states: dict[str, str] = {}
    for name, check in _CHECKS.items():
        try:
            check(services)
        except Exception as err:  # any failure at all means "not ready"
            log.warning("readiness: %s is down: %s: %s", name, type(err).__name__,
                        " ".join(str(err).split())[:300])
            states[name] = "down"
        else:
            states[name] = "ok"
    return [name for name, state in states.items() if state != "ok"], states


@blueprint.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Any:
    down, states = readiness(current_app.extensions["delivery"])
    if not down:
        return jsonify({"status": "ready", "checks": states})
    response = jsonify({"status": "unavailable", "down": down, "checks": states,
                        "message": f"not ready: {', '.join(down)} unavailable"})
    response.status_code = 503
    return response

"""Correlation ids and per-request log context for the API.

Every response carries ``X-Correlation-ID`` (the caller's own, if it sent a sane
one, else a fresh one); error bodies repeat it as ``correlation_id`` (see
:mod:`api.errors`) and the API writes one log line per error response with the
same id, so a user's error message leads an operator straight to the log line.
While a request is handled, log lines carry ``correlation_id`` and, for routes
with a ``<request_id>`` in the URL, ``request_id``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from flask import Flask, Response, g, has_request_context, request

from delivery.logs import Token, bind, unbind

__all__ = ["install", "correlation_id", "HEADER"]

HEADER = "X-Correlation-ID"
_SANE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
log = logging.getLogger("delivery.api")

# the binding made in before_request, undone at teardown
_bound: contextvars.ContextVar[Token | None] = contextvars.ContextVar(
    "delivery_api_log_token", default=None)


def correlation_id() -> str | None:
    """This HTTP request's correlation id (made on first use); None outside a request."""
    if not has_request_context():
        return None
    found = g.get("correlation_id")
    if found is None:
        given = request.headers.get(HEADER, "")
        found = given if _SANE.match(given) else uuid.uuid4().hex
        g.correlation_id = found
    return str(found)


def _bind() -> None:
    args = request.view_args or {}
    rid, fid = args.get("request_id"), args.get("file_id")
    _bound.set(bind(correlation_id=correlation_id(),
                    request_id=rid[:64] if isinstance(rid, str) else None,
                    file_id=fid if isinstance(fid, int) else None))


def _after(response: Response) -> Response:
    cid = correlation_id()
    if cid:
        response.headers[HEADER] = cid
    if response.status_code >= 400:
        message = str(g.get("error_message") or "")
        if response.is_json:
            body = response.get_json(silent=True)
            if isinstance(body, dict):
                message = str(body.get("message", ""))[:300]
        level = logging.ERROR if response.status_code >= 500 else logging.WARNING
        log.log(level, "%s %s -> %d %s", request.method, request.path,
                response.status_code, message, extra={"correlation_id": cid})
    return response


def _teardown(_exc: BaseException | None) -> None:
    token = _bound.get()
    if token is not None:
        try:
            unbind(token)
        except ValueError:  # set in another context (should not happen): leave it
            pass
        _bound.set(None)


def install(app: Flask) -> None:
    """Register first, so the context is bound before auth or any route can log."""
    app.before_request_funcs.setdefault(None, []).insert(0, _bind)
    app.after_request(_after)
    app.teardown_request(_teardown)

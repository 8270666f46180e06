"""Every error the API answers is JSON, and the mapping from our error tree lives here.

=================================== ======
``SelectionError``, ``InputError``  400
``PolicyError``                     400
``Unauthorized``                    401
``Forbidden``                       403
``NotFound``                        404
``Conflict``                        409
body too large                      413
not JSON                            415
JSON too deep or malformed          400
``TransientError``                  503
anything else                       500 (a bug of ours; logged, no trace sent)
=================================== ======
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Request, jsonify
from flask import request as incoming
from werkzeug.exceptions import HTTPException

from api.requestlog import correlation_id
from delivery.errors import DeliveryError, PermanentError, PolicyError, TransientError

__all__ = ["ApiError", "NotFound", "Conflict", "Unauthorized", "Forbidden", "install",
           "read_json", "MAX_JSON_DEPTH"]

log = logging.getLogger("delivery.api")
MAX_JSON_DEPTH = 32


class ApiError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class UnsupportedMedia(ApiError):
    status = 415


def _depth_ok(text: str, limit: int) -> bool:
    # Counted on the raw text before decoding: json.loads recurses and a deep body
    # would cost a RecursionError (a 500 in Flask's default handling).
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or an ApiError saying what is wrong with it."""
    if not request.is_json:
        raise UnsupportedMedia("send the body as JSON (Content-Type: application/json)")
    text = request.get_data(as_text=True)
    if "\x00" in text or "\\u0000" in text:  # PostgreSQL text cannot hold NUL (a driver 500)
        raise ApiError("NUL characters are not allowed in the body")
    if not _depth_ok(text, MAX_JSON_DEPTH):
        raise ApiError(f"JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text)
    except ValueError as err:
        raise ApiError(f"body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError("body must be a JSON object")
    return body


def _body(status: int, message: str) -> Any:
    # the same id is in the X-Correlation-ID header and in the API's log line
    response = jsonify({"message": message, "status": status,
                        "correlation_id": correlation_id()})
    response.status_code = status
    return response


def install(app: Flask) -> None:
    @app.before_request
    def no_nul() -> Any:
        # Ids and filters reach the database, whose text cannot hold NUL: a 400, not a 500.
        if "\x00" in incoming.path or any("\x00" in k or "\x00" in v
                                          for k, v in incoming.args.items(multi=True)):
            return _body(400, "NUL characters are not allowed in the path or query")
        return None

    @app.errorhandler(ApiError)
    def api_error(err: ApiError) -> Any:
        return _body(err.status, err.message)

    @app.errorhandler(DeliveryError)
    def delivery_error(err: DeliveryError) -> Any:
        if isinstance(err, TransientError):
            return _body(503, f"temporarily unavailable: {err.reason}")
        if isinstance(err, PermanentError | PolicyError):
            return _body(400, err.reason)
        return _body(500, err.reason)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Any:
        return _body(err.code or 500, err.description or err.name)

    @app.errorhandler(RecursionError)
    def too_deep(err: RecursionError) -> Any:
        return _body(400, "request is nested too deeply")

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Any:
        log.exception("internal error")
        return _body(500, "internal error; the operator's log has the details")

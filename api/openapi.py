"""The API's OpenAPI 3 document, served at ``GET /openapi.json``.

Why a hand-written table and not introspection: Flask routes carry no types, and
the point of the document is to state the contract (bodies, errors, credentials)
precisely enough for schemathesis to fuzz it and for a client to be generated from
it. ``tests/test_fuzz_api.py`` fails if a rule in ``app.url_map`` is neither in
:data:`OPERATIONS` nor in :data:`UNDOCUMENTED`, so the table cannot silently rot.

The served document holds only the operations the running app really has (routes
added by optional blueprints appear once they are registered).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify

from api.openapi_schemas import SCHEMAS, ref
from api.submit import CODEGENS, FORMATS
from delivery import __version__

__all__ = ["blueprint", "document", "OPERATIONS", "UNDOCUMENTED", "openapi_path"]

blueprint = Blueprint("openapi", __name__)

# Rules that are not part of the JSON API: the dashboard's HTML pages and files.
UNDOCUMENTED = frozenset({"/", "/requests/<request_id>", "/workers", "/login",
                          "/static/<path:filename>"})

_BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_SERVICE: list[dict[str, list[str]]] = [{"serviceToken": []}]
_PUBLIC: list[dict[str, list[str]]] = []

_REQUEST_ID = {"name": "request_id", "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1},
               "description": "the request's id (a UUID) as returned by the submission"}
_FILE_ID = {"name": "file_id", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0},
            "description": "the file's index in the request's file list"}
_DATASET_ID = {"name": "dataset_id", "in": "path", "required": True,
               "schema": {"type": "integer", "minimum": 0}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_ERRORS = {
    400: "malformed input (the message says what and where)",
    401: "no or invalid credential",
    403: "the credential does not allow this",
    404: "no such object (or not yours)",
    409: "the request is already final",
    413: "body larger than 16 MiB",
    415: "body is not JSON",
    503: "a dependency (database, broker, object store) is down; retry later",
}


def _op(summary: str, ok: dict[str, Any] | str, *, tag: str, errors: tuple[int, ...] = (),
        params: tuple[dict[str, Any], ...] = (), body: str | None = None,
        security: list[dict[str, list[str]]] | None = None) -> dict[str, Any]:
    """One operation. ``ok`` is a component name (a JSON 200) or a full responses dict."""
    responses: dict[str, Any] = (
        {"200": {"description": "OK",
                 "content": {"application/json": {"schema": ref(ok)}}}}
        if isinstance(ok, str) else dict(ok))
    codes = set(errors) | {503}
    if security is not _PUBLIC:
        codes |= {401, 403}
    if body is not None:
        codes |= {400, 413, 415}
    for code in sorted(codes):
        responses[str(code)] = {"description": _ERRORS[code],
                                "content": {"application/json": {"schema": ref("Error")}}}
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": ref(body)}}}
    if security is not None:
        op["security"] = security
    return op


_SX, _NATIVE, _INTERNAL, _OPS, _DASH = "servicex", "native", "internal", "operations", \
    "dashboard"
_RESULT_FILTERS = (
    _REQUEST_ID,
    _query("later_than", {"type": "string", "format": "date-time"},
           "only results recorded strictly after this ISO-8601 time (naive = UTC)"),
    _query("status", {"type": "string"}, "only results with this transform_status"))

# (Flask rule, method) -> operation
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/servicex", "GET"): _op("Server information: version, codegens, capabilities", "Info",
                              tag=_SX),
    ("/servicex/transformation", "POST"): _op(
        "Submit a transformation request", "Submitted", tag=_SX, body="TransformRequest"),
    ("/servicex/transformation", "GET"): _op("List transformation requests", "StatusList",
                                             tag=_SX),
    ("/servicex/transformation/<request_id>", "GET"): _op(
        "A request's status", "Status", tag=_SX, errors=(404,), params=(_REQUEST_ID,)),
    ("/servicex/transformation/<request_id>", "DELETE"): _op(
        "Delete a request and its outputs (idempotent)", "Message", tag=_SX,
        params=(_REQUEST_ID,)),
    ("/servicex/transformation/<request_id>/results", "GET"): _op(
        "A request's per-file results", "Results", tag=_SX, errors=(400, 404),
        params=_RESULT_FILTERS),
    ("/servicex/transformation/<request_id>/cancel", "GET"): _op(
        "Cancel a request", "Message", tag=_SX, errors=(404, 409), params=(_REQUEST_ID,)),
    ("/servicex/transformation/<request_id>/cancel", "POST"): _op(
        "Cancel a request", "Message", tag=_SX, errors=(404, 409), params=(_REQUEST_ID,)),
    ("/servicex/datasets", "GET"): _op("List datasets", "DatasetList", tag=_SX),
    ("/servicex/datasets/<int:dataset_id>", "GET"): _op(
        "One dataset and its lookup status", "Dataset", tag=_SX, errors=(404,),
        params=(_DATASET_ID,)),
    ("/servicex/datasets/<int:dataset_id>", "DELETE"): _op(
        "Mark a dataset stale (looked up again next time)", "DatasetDeleted", tag=_SX,
        params=(_DATASET_ID,)),
    ("/api/v1/requests/<request_id>/files", "GET"): _op(
        "Per-file results with their errors", "Files", tag=_NATIVE, errors=(400, 404),
        params=(_REQUEST_ID, _query("status", {"type": "string",
                                               "enum": ["success", "failure"]},
                                    "only successes or only failures"))),
    ("/api/v1/requests/<request_id>/files/<int:file_id>/download", "GET"): _op(
        "Download one output without storage credentials", {
            "200": {"description": "the output's bytes (local result store)",
                    "content": {"application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}}}},
            "307": {"description": "redirect to a short-lived presigned URL (S3 store)"}},
        tag=_NATIVE, errors=(404,), params=(_REQUEST_ID, _FILE_ID)),
    ("/api/v1/requests/<request_id>/wait", "GET"): _op(
        "Long poll: returns once a result newer than `after` exists, the request is final, "
        "or the timeout passes", "Wait", tag=_NATIVE, errors=(400, 404), params=(
            _REQUEST_ID,
            _query("after", {"type": "string", "format": "date-time"},
                   "return results recorded strictly after this time"),
            _query("timeout", {"type": "number", "minimum": 0, "maximum": 60},
                   "seconds to wait at most (capped at 60; default 30)"))),
    ("/internal/results", "POST"): _op(
        "A worker records one file's outcome (idempotent)", "Recorded", tag=_INTERNAL,
        errors=(404,), body="FileReport", security=_SERVICE),
    ("/internal/requests/<request_id>/files/<int:file_id>", "GET"): _op(
        "Whether a worker should still transform this file", "Pending", tag=_INTERNAL,
        params=(_REQUEST_ID, _FILE_ID), security=_SERVICE),
    ("/internal/heartbeat", "POST"): _op(
        "A worker's heartbeat: what it is on, its counters", "Ok", tag=_INTERNAL,
        body="Heartbeat", security=_SERVICE),
    ("/dashboard/api/requests", "GET"): _op(
        "The dashboard's request list (summaries with progress)", "DashboardRequests",
        tag=_DASH, errors=(400,), params=(_query("status", {"type": "string"},
                                                 "only requests with this status"),)),
    ("/dashboard/api/requests/<request_id>", "GET"): _op(
        "The dashboard's view of one request: files, progress, a client snippet",
        "DashboardRequest", tag=_DASH, errors=(404,), params=(_REQUEST_ID,)),
    ("/dashboard/api/workers", "GET"): _op(
        "The dashboard's view of the workers (heartbeats)", "DashboardWorkers", tag=_DASH),
    ("/token/refresh", "POST"): _op(
        "Exchange a refresh token (as the bearer credential) for a short-lived access JWT",
        "AccessToken", tag=_OPS, errors=(401, 403),
        security=[{"refreshToken": []}]),
    ("/healthz", "GET"): _op("Liveness: the process answers", "Health", tag=_OPS,
                             security=_PUBLIC),
    ("/readyz", "GET"): _op("Readiness: database, broker and object store reachable",
                            "Health", tag=_OPS, security=_PUBLIC),
    ("/metrics", "GET"): _op(
        "Prometheus metrics (public with auth off; admins only with auth on)",
        {"200": {"description": "Prometheus text format",
                 "content": {"text/plain": {"schema": {"type": "string"}}}}}, tag=_OPS),
    ("/openapi.json", "GET"): _op(
        "This document", {"200": {"description": "an OpenAPI 3.0 document",
                                  "content": {"application/json": {
                                      "schema": {"type": "object"}}}}},
        tag=_OPS, security=_PUBLIC),
}

_CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/a/<int:b>`` -> ``/a/{b}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``: every documented operation it has."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = OPERATIONS.get((rule.rule, method))
            if op is not None:
                paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = op
    schemas = dict(SCHEMAS)
    schemas["TransformRequest"] = _with_enums(schemas["TransformRequest"])
    return {
        "openapi": "3.0.3",
        "info": {"title": "columnar-delivery", "version": __version__,
                 "description": "ServiceX-compatible data delivery, plus native endpoints. "
                                "With auth off (the default) no credential is needed except "
                                "on /internal/*, which always takes the service credential."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "an access JWT from POST /token/refresh "
                                              "(only with DELIVERY_AUTH=on)"},
                "refreshToken": {"type": "http", "scheme": "bearer",
                                 "description": "a user's refresh token"},
                "serviceToken": {"type": "http", "scheme": "bearer",
                                 "description": "the workers' DELIVERY_SERVICE_TOKEN"},
            },
        },
        "security": _BEARER,
    }


def _with_enums(schema: dict[str, Any]) -> dict[str, Any]:
    # The accepted values come from the code that enforces them, not a second copy.
    props = dict(schema["properties"])
    props["codegen"] = {**props["codegen"], "enum": list(CODEGENS)}
    props["result-format"] = {**props["result-format"], "enum": list(FORMATS)}
    return {**schema, "properties": props}


@blueprint.get("/openapi.json")
def openapi_json() -> Any:
    return jsonify(document(current_app))

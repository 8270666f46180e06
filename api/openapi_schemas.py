"""The component schemas of the OpenAPI document (:mod:`api.openapi`).

They describe what the handlers really accept and return; where the code is
stricter than a schema can say (exactly one of ``did`` and ``file-list``, the
expression language of ``cut``) the description says so and the API answers 400.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMAS", "ref"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), extra: bool = True,
         description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if not extra:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


_S: dict[str, Any] = {"type": "string"}
_NS: dict[str, Any] = {"type": "string", "nullable": True}
_I: dict[str, Any] = {"type": "integer"}
_N: dict[str, Any] = {"type": "number"}
_B: dict[str, Any] = {"type": "boolean"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time", "nullable": True}
_STRINGS: dict[str, Any] = {"nullable": True, "oneOf": [
    _S, {"type": "array", "items": _S, "maxItems": 10000}]}
_EXPR: dict[str, Any] = {"type": "string", "maxLength": 4096,
                         "description": "an expression: numbers, branch names, arithmetic, "
                                        "comparisons, & | ~ and or not, the listed functions"}

TREE_QUERY = _obj({
    "treename": {"description": "a tree name, a list of them, or {input: output} renames",
                 "oneOf": [_S, {"type": "array", "items": _S, "minItems": 1},
                           {"type": "object", "additionalProperties": _S, "minProperties": 1}]},
    "filter_name": _STRINGS,
    "filter_typename": _STRINGS,
    "expressions": {"nullable": True, "oneOf": [_EXPR, {"type": "array", "items": _EXPR}]},
    "cut": {**_EXPR, "nullable": True},
    "aliases": {"type": "object", "nullable": True, "additionalProperties": _EXPR},
    "fail_on_missing_trees": {**_B, "nullable": True},
    "use_standard_awkward_axis": {**_B, "nullable": True},
}, required=("treename",), extra=False, description="read a tree with one cut and columns")

COPY_QUERY = _obj({"copy_histograms": {**_S, "minLength": 1,
                                       "description": "a name, glob or /regex/"}},
                  required=("copy_histograms",), extra=False,
                  description="copy histograms (ROOT output only)")

SELECTION: dict[str, Any] = {
    "description": "the uproot-raw selection: JSON text of a list of queries (as the "
                   "servicex client sends it), or that list itself",
    "oneOf": [{"type": "string", "minLength": 1},
              {"type": "array", "minItems": 1, "maxItems": 64,
               "items": {"oneOf": [ref("TreeQuery"), ref("CopyQuery")]}}],
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"message": {**_S, "description": "what went wrong, for a person"},
                   "status": _I}, required=("message",)),
    "Message": _obj({"message": _S}, required=("message",)),
    "Info": _obj({"app-version": _S,
                  "code-gen-image": {"type": "object", "additionalProperties": _S},
                  "capabilities": {"type": "array", "items": _S}},
                 required=("app-version", "code-gen-image")),
    "TreeQuery": TREE_QUERY,
    "CopyQuery": COPY_QUERY,
    "TransformRequest": _obj({
        "title": {**_S, "maxLength": 10240, "nullable": True},
        "selection": SELECTION,
        "codegen": {**_S, "description": "default uproot-raw"},
        "result-destination": {**_S, "enum": ["object-store"]},
        "result-format": {**_S, "description": "default root-file"},
        "did": {**_S, "description": "a dataset: local glob, root://host//path/*.root, an "
                                     "https file, or a plugin scheme (rucio://...); "
                                     "?files=N takes the first N. Exactly one of did and "
                                     "file-list."},
        "file-list": {"type": "array", "minItems": 1, "items": _S,
                      "description": "paths or URLs, one replica each"},
        "reuse": {**_B, "description": "serve from an identical earlier request (default "
                                       "true)"},
        "tree-name": {"nullable": True, "description": "accepted and ignored"},
        "workers": {"nullable": True, "description": "accepted and ignored"},
        "client-version": {"nullable": True, "description": "accepted and ignored"},
        "image": {"nullable": True, "description": "accepted and ignored"},
    }, required=("selection",), extra=False),
    "Submitted": _obj({"request_id": _S}, required=("request_id",)),
    "Status": _obj({
        "request_id": _S, "did": _S, "did_id": _I, "title": _NS, "selection": _S,
        "tree-name": _NS, "image": _S, "result-destination": _S, "result-format": _S,
        "generated-code-cm": _S,
        "status": {**_S, "enum": ["Submitted", "Lookup", "Pending Lookup", "Running",
                                  "Complete", "Fatal", "Canceled", "Bad Dataset"]},
        "failure-info": _NS, "app-version": _S, "code-gen-image": _S,
        "files": _I, "files-completed": _I, "files-failed": _I, "files-remaining": _I,
        "submit-time": _TIME, "finish-time": _TIME, "reused-from": _NS,
        "minio-endpoint": _S, "minio-secured": _B,
        "minio-access-key": {**_S, "description": "read-only key, or empty"},
        "minio-secret-key": {**_S, "description": "read-only secret, or empty"},
    }, required=("request_id", "status", "files", "files-completed", "files-failed")),
    "StatusList": _obj({"requests": {"type": "array", "items": ref("Status")}},
                       required=("requests",)),
    "Result": _obj({
        "id": _I, "request-id": _S, "did": _S, "file-id": _I, "file-path": _NS,
        "transform_status": {**_S, "enum": ["success", "failure"]},
        "transform_time": _N, "total-events": _I, "total-bytes": _I, "avg-rate": _N,
        "s3-object-name": _NS, "created_at": {**_S, "format": "date-time"},
        "error": _NS, "sha256": _NS,
    }, required=("file-id", "transform_status", "created_at")),
    "Results": _obj({"results": {"type": "array", "items": ref("Result")}},
                    required=("results",)),
    "Files": _obj({"request_id": _S, "files": {"type": "array", "items": ref("Result")}},
                  required=("request_id", "files")),
    "Wait": _obj({"status": ref("Status"), "results": {"type": "array", "items": ref("Result")}},
                 required=("status", "results")),
    "Dataset": _obj({
        "id": _I, "name": _S, "did_finder": _S,
        "lookup_status": {**_S, "enum": ["complete", "looking", "stale", "bad_name",
                                         "does_not_exist", "internal_failure"]},
        "lookup_message": _NS, "n_files": _I, "size": _I, "events": _I, "is_stale": _B,
        "last_used": _TIME, "last_updated": _TIME, "files": {"type": "array", "items": {}},
    }, required=("id", "name", "lookup_status")),
    "DatasetList": _obj({"datasets": {"type": "array", "items": ref("Dataset")}},
                        required=("datasets",)),
    "DatasetDeleted": _obj({"dataset-id": _I, "stale": _B}),
    "FileReport": _obj({
        "request_id": _S, "file_id": {**_I, "minimum": 0},
        "status": {**_S, "enum": ["success", "failure"]},
        "object_name": _NS, "total_bytes": {**_I, "minimum": 0}, "sha256": _NS,
        "events_in": {**_I, "minimum": 0}, "events_out": {**_I, "minimum": 0},
        "seconds": {**_N, "minimum": 0}, "error": _NS,
    }, required=("request_id", "file_id", "status"),
        description="one file's outcome, as a worker reports it"),
    "Recorded": _obj({"recorded": _B}, required=("recorded",)),
    "Pending": _obj({"status": _NS, "pending": _B}, required=("pending",)),
    "AccessToken": _obj({"access_token": {**_S, "description": "a JWT with an exp claim"}},
                        required=("access_token",)),
    "Ok": _obj({"ok": _B}, required=("ok",)),
    "Heartbeat": _obj({
        "worker": {**_S, "minLength": 1}, "kind": _NS, "request_id": _NS, "file": _NS,
        "last_error": _NS, **{k: {**_N, "nullable": True} for k in (
            "pid", "started", "sent", "file_id", "file_started", "files_done", "files_failed",
            "events_in", "events_out", "bytes", "busy_seconds", "last_error_time")},
    }, required=("worker",), description="a worker's snapshot; unknown keys are ignored"),
    "DashboardSummary": _obj({
        "request_id": _S, "title": _S, "did": _S, "owner": _NS, "status": _S,
        "failure_info": _NS, "format": _S, "files": _I, "completed": _I, "failed": _I,
        "remaining": _I, "events": _I, "events_in": _I, "bytes": _I, "rate": _N, "age": _N,
        "elapsed": _N, "submit_time": _TIME, "finish_time": _TIME, "reused_from": _NS,
    }, required=("request_id", "status")),
    "DashboardRequests": _obj({"requests": {"type": "array",
                                            "items": ref("DashboardSummary")}},
                              required=("requests",)),
    "DashboardRequest": {"allOf": [ref("DashboardSummary"), _obj({
        "selection": _S, "files_table": {"type": "array", "items": {"type": "object"}},
        "files_shown": _I, "series": {"type": "array", "items": {"type": "array"}},
        "snippet": _S})]},
    "DashboardWorkers": _obj({"workers": {"type": "array", "items": {"type": "object"}}},
                             description="workers' heartbeats, queue depth, dead letters"),
    "Health": _obj({"status": _S}, extra=True,
                   description="ok, or what is down (readiness answers 503 then)"),
}

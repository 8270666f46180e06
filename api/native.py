"""Our own endpoints, beyond the ServiceX protocol.

- ``GET /api/v1/requests/<id>/files?status=failure``: per-file results with their errors.
- ``GET /api/v1/requests/<id>/files/<file_id>/download``: the output without storage
  credentials: a redirect to a short-lived presigned URL, or the bytes streamed by
  the API when the store is a local directory.
- ``GET /api/v1/requests/<id>/wait?after=<ISO>&timeout=<s>``: a long poll that returns
  as soon as a result newer than ``after`` exists or the request is final.
- ``POST /internal/results`` and ``GET /internal/requests/<id>/files/<n>``: for workers
  only, with the service credential (``Authorization: Bearer $DELIVERY_SERVICE_TOKEN``).
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import Blueprint, jsonify, redirect, request, send_file
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError, Forbidden, NotFound, Unauthorized, read_json
from api.operations import record_result
from api.servicex import FINAL, owned, parse_time, result_item, services, status_object
from delivery.messages import FAILURE, SUCCESS, FileReport
from delivery.objects import check_key

__all__ = ["blueprint"]

blueprint = Blueprint("native", __name__)
MAX_WAIT = 60.0
RECHECK = 0.5  # results recorded by another API instance are seen within this


@blueprint.get("/api/v1/requests/<request_id>/files")
def files(request_id: str) -> Any:
    row = owned(request_id)
    svc = services()
    wanted = request.args.get("status")
    if wanted not in (None, "success", "failure"):
        raise ApiError("status must be success or failure")
    paths = svc.store.file_paths(request_id)
    return jsonify({"request_id": request_id, "files": [
        result_item(r, row, paths.get(r.file_id))
        for r in svc.store.results(request_id, status=wanted)]})


@blueprint.get("/api/v1/requests/<request_id>/files/<int:file_id>/download")
def download(request_id: str, file_id: int) -> Any:
    owned(request_id)
    svc = services()
    found = [r for r in svc.store.results(request_id, status="success") if r.file_id == file_id]
    if not found or not found[0].object_name:
        raise NotFound(f"file {file_id} of {request_id} has no output")
    key = found[0].object_name
    url = svc.objects.download_url(request_id, key)
    if url:
        return redirect(url, code=307)
    path = svc.objects.local_path(request_id, key)
    if path is None or not path.exists():
        raise NotFound(f"output {key} is gone")
    return send_file(path, as_attachment=True, download_name=key, conditional=True)


@blueprint.get("/api/v1/requests/<request_id>/wait")
def wait(request_id: str) -> Any:
    owned(request_id)
    svc = services()
    after = parse_time(request.args.get("after"), "after")
    try:
        timeout = min(float(request.args.get("timeout", "30")), MAX_WAIT)
    except ValueError:
        raise ApiError("timeout must be a number of seconds") from None
    deadline = time.monotonic() + max(timeout, 0.0)
    seen = svc.news.version
    while True:
        row = owned(request_id)
        new = svc.store.results(request_id, later_than=after)
        left = deadline - time.monotonic()
        if new or row.status in FINAL or left <= 0:
            paths = svc.store.file_paths(request_id)
            return jsonify({"status": status_object(row, svc),
                            "results": [result_item(r, row, paths.get(r.file_id)) for r in new]})
        seen = svc.news.wait(seen, min(left, RECHECK))


def _service_only() -> None:
    token = services().settings.service_token
    given = request.headers.get("Authorization", "")
    if not token:
        raise Forbidden("internal endpoints are disabled: DELIVERY_SERVICE_TOKEN is not set")
    if not given.startswith("Bearer "):
        raise Unauthorized("internal endpoints need the service credential")
    if not hmac.compare_digest(given[7:].encode(), token.encode()):
        raise Forbidden("wrong service credential")


# Column types of the results table: a value outside them is the sender's error (400),
# not a database error (500). Strings may not hold NUL, which PostgreSQL refuses.
_REPORT_FIELDS: dict[str, tuple[type, ...]] = {
    "request_id": (str,), "object_name": (str, type(None)), "sha256": (str, type(None)),
    "error": (str, type(None)), "file_id": (int,), "total_bytes": (int,), "events_in": (int,),
    "events_out": (int,), "seconds": (int, float)}
_LIMITS = {"file_id": 2**31 - 1, "request_id": 64, "sha256": 64}


def _check_report(report: FileReport) -> None:
    for name, kinds in _REPORT_FIELDS.items():
        value = getattr(report, name)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ApiError(f"bad report: {name} has the wrong type")
        if isinstance(value, int | float) and not 0 <= value <= _LIMITS.get(name, 2**63 - 1):
            raise ApiError(f"bad report: {name} is out of range")  # NaN fails this too
        if isinstance(value, str) and ("\x00" in value or len(value) > _LIMITS.get(name, 1e6)):
            raise ApiError(f"bad report: {name} is too long or holds a NUL character")
    if report.status == SUCCESS:  # a success names its stored output (the cache copies it)
        try:
            check_key(report.object_name or "")
        except ValueError as err:
            raise ApiError(f"bad report: {err}") from None


@blueprint.post("/internal/results")
def record() -> Any:
    _service_only()
    body = read_json(request)
    try:
        report = FileReport.from_json(body)
    except (TypeError, ValueError) as err:
        raise ApiError(f"bad report: {err}") from None
    if not isinstance(report.file_id, int) or report.status not in (SUCCESS, FAILURE):
        raise ApiError("bad report: file_id must be an integer and status success or failure")
    _check_report(report)
    svc = services()
    if svc.store.get(report.request_id) is None:
        raise NotFound(f"no transformation request {report.request_id}")
    try:
        changed = record_result(svc, report)  # counted in /metrics only if it changed
    except IntegrityError:  # the foreign key: no such file in that request
        raise NotFound(f"request {report.request_id} has no file {report.file_id}") from None
    svc.news.publish()
    return jsonify({"recorded": bool(changed)})


@blueprint.get("/internal/requests/<request_id>/files/<int:file_id>")
def internal_pending(request_id: str, file_id: int) -> Any:
    """Whether a worker should transform this file: request live and file not done."""
    _service_only()
    svc = services()
    row = svc.store.get(request_id)
    live = row is not None and row.status not in FINAL
    return jsonify({"status": row.status if row else None,
                    "pending": live and not svc.store.file_done(request_id, file_id)})

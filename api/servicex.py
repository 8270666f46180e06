"""The ServiceX REST protocol (``shared/docs/servicex-protocol.md``), so the real
``servicex`` client works unchanged. Field names, status values and semantics
follow that document; counts are always derived from result rows.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from api.auth import can_see, current_user, owner_filter
from api.errors import ApiError, Conflict, NotFound, read_json
from api.services import Services
from api.submit import CODEGENS, submit
from delivery import __version__

__all__ = ["blueprint", "status_object", "result_item", "FINAL"]

blueprint = Blueprint("servicex", __name__)
FINAL = ("Complete", "Fatal", "Canceled", "Bad Dataset")


def services() -> Services:
    found: Services = current_app.extensions["delivery"]
    return found


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def owned(request_id: str) -> Any:
    """The request's row, or a 404 if it is missing or someone else's."""
    row = services().store.get(request_id)
    if row is None or not can_see(row.owner):
        raise NotFound(f"no transformation request {request_id}")
    return row


def status_object(row: Any, svc: Services) -> dict[str, Any]:
    c = row.counts  # read with the row, in the same query: one consistent snapshot
    return {
        "request_id": row.request_id,
        "did": row.did,
        "did_id": row.dataset_id,
        "title": row.title,
        "selection": row.selection,
        "tree-name": None,
        "image": "columnar-delivery",
        "result-destination": row.result_destination,
        "result-format": row.result_format,
        # a string: the servicex client (3.3.1) refuses a status whose value is null
        "generated-code-cm": f"{row.request_id}-generated-source",
        "status": row.status,
        "failure-info": row.failure_info,
        "app-version": __version__,
        "code-gen-image": "columnar-delivery",
        "files": c.files,
        "files-completed": c.completed,
        "files-failed": c.failed,
        "files-remaining": c.remaining,
        "submit-time": _iso(row.submit_time),
        "finish-time": _iso(row.finish_time),
        "reused-from": row.reused_from,
        **svc.objects.client_fields(),
    }


def result_item(r: Any, row: Any, path: str | None) -> dict[str, Any]:
    rate = r.events_out / r.seconds if r.seconds else 0.0
    return {
        "id": r.file_id, "request-id": r.request_id, "did": row.did, "file-id": r.file_id,
        "file-path": path, "transform_status": r.status, "transform_time": r.seconds,
        "total-events": r.events_out, "total-bytes": r.total_bytes, "avg-rate": rate,
        "s3-object-name": r.object_name, "created_at": r.created_at.isoformat(),
        "error": r.error, "sha256": r.sha256,
    }


def parse_time(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(f"{name} must be an ISO-8601 time, not {text[:40]!r}") from None
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


@blueprint.get("/servicex")
def info() -> Any:
    return jsonify({
        "app-version": __version__,
        "code-gen-image": {name: "columnar-delivery" for name in CODEGENS},
        "capabilities": ["poll_local_transformation_results", "long_sample_titles_10240",
                         "post_cancel_transform"],
    })


@blueprint.post("/servicex/transformation")
def create() -> Any:
    user = current_user()
    request_id = submit(read_json(request), services(), owner=user.name if user else None)
    return jsonify({"request_id": request_id})


@blueprint.get("/servicex/transformation")
def list_requests() -> Any:
    svc = services()
    rows = svc.store.list_requests(owner=owner_filter())
    return jsonify({"requests": [status_object(r, svc) for r in rows]})


@blueprint.get("/servicex/transformation/<request_id>")
def status(request_id: str) -> Any:
    return jsonify(status_object(owned(request_id), services()))


@blueprint.get("/servicex/transformation/<request_id>/results")
def results(request_id: str) -> Any:
    row = owned(request_id)
    later = parse_time(request.args.get("later_than"), "later_than")
    wanted = request.args.get("status")
    svc = services()
    paths = svc.store.file_paths(request_id)
    items = [result_item(r, row, paths.get(r.file_id))
             for r in svc.store.results(request_id, later_than=later, status=wanted)]
    return jsonify({"results": items})


@blueprint.route("/servicex/transformation/<request_id>/cancel", methods=["GET", "POST"])
def cancel(request_id: str) -> Any:
    row = owned(request_id)
    svc = services()
    if row.status in FINAL and row.status != "Canceled":
        raise Conflict(f"request {request_id} is already {row.status}")
    svc.store.set_status(request_id, "Canceled", failure_info="canceled by the user")
    svc.news.publish()
    return jsonify({"message": f"canceled transformation request {request_id}"})


@blueprint.delete("/servicex/transformation/<request_id>")
def delete(request_id: str) -> Any:
    svc = services()
    row = svc.store.get(request_id)
    if row is not None and not can_see(row.owner):
        raise NotFound(f"no transformation request {request_id}")
    if row is None:  # already deleted (or never existed): deleting is idempotent
        return jsonify({"message": f"no transformation request {request_id}; nothing to delete"})
    if row.status not in FINAL:
        svc.store.set_status(request_id, "Canceled", failure_info="deleted by the user")
    # Outputs first: if the store fails (503), the rows stay and a retry finishes the job.
    svc.objects.delete_bucket(request_id)
    svc.store.delete_request(request_id)
    return jsonify({"message": f"deleted transformation request {request_id}"})


# The servicex client reads lookup_status as one of its own codes (anything else
# crashes it), so the code says why in its words and lookup_message in ours.
_LOOKUP_OK = ("complete", "looking", "stale")


def _lookup_code(status: str | None) -> str:
    text = (status or "").lower()
    if text in _LOOKUP_OK:
        return text
    if "no finder" in text or "must be" in text or "name one file" in text:
        return "bad_name"
    if "no files match" in text or "cannot list" in text or "cannot reach" in text:
        return "does_not_exist"
    return "internal_failure"


def _dataset(d: Any) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "did_finder": d.did_finder,
            "lookup_status": _lookup_code(d.lookup_status),
            "lookup_message": d.lookup_status, "n_files": d.n_files or 0, "size": d.size or 0,
            "events": 0, "is_stale": d.lookup_status == "stale",
            "last_used": _iso(d.last_used), "last_updated": _iso(d.last_updated),
            "files": []}


@blueprint.get("/servicex/datasets")
def datasets() -> Any:
    return jsonify({"datasets": [_dataset(d) for d in services().store.list_datasets()]})


@blueprint.get("/servicex/datasets/<int:dataset_id>")
def dataset(dataset_id: int) -> Any:
    found = services().store.get_dataset(dataset_id)
    if found is None:
        raise NotFound(f"no dataset {dataset_id}")
    return jsonify(_dataset(found))


@blueprint.delete("/servicex/datasets/<int:dataset_id>")
def delete_dataset(dataset_id: int) -> Any:
    services().store.delete_dataset(dataset_id)
    return jsonify({"dataset-id": dataset_id, "stale": True})

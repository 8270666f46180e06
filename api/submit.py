"""Submitting a transformation: validate everything, then record and enqueue, or nothing.

Order matters: the selection is parsed and every input checked against the
policy before anything is written, so a bad request is a 400 with no trace
in the database. If the broker refuses the tasks, the request rows are removed
again and the client gets a 503: no orphan request is left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from typing import Any

from api.datasets import LookupFailed, check_file_list, resolve_did
from api.errors import ApiError
from api.services import Services
from delivery.errors import DeliveryError, SelectionError, TransientError
from delivery.messages import SUCCESS, FileReport, FileTask
from delivery.policy import is_local
from delivery.selection import parse_selection

__all__ = ["submit", "cache_key", "FORMATS", "CODEGENS"]

log = logging.getLogger("delivery.api")

FORMATS = ("root-file", "parquet", "arrow")
CODEGENS = ("uproot-raw",)
MAX_TITLE = 10240
_KNOWN = {"title", "selection", "codegen", "result-destination", "result-format", "did",
          "file-list", "tree-name", "workers", "client-version", "image", "reuse"}


def _field(body: dict[str, Any], key: str, default: Any, allowed: tuple[str, ...]) -> str:
    value = body.get(key) or default
    if value not in allowed:
        raise ApiError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def cache_key(files: list[list[str]], selection: str, fmt: str) -> str:
    """Equal keys mean equal outputs: same inputs (local ones also by size and
    modification time, so an edited file is transformed again), selection and format."""
    stamped = []
    for replicas in files:
        first = replicas[0]
        try:
            st = os.stat(first) if is_local(first) else None
        except OSError:
            st = None
        stamped.append([replicas, [st.st_size, st.st_mtime_ns] if st else None])
    text = json.dumps([stamped, selection, fmt], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _serve_from_cache(services: Services, request_id: str, original: Any) -> bool:
    """Copy a completed identical request's outputs and results; False if that fails."""
    store, objects = services.store, services.objects
    try:
        for r in store.results(original.request_id, status=SUCCESS):
            size = objects.copy_object(original.request_id, r.object_name, request_id)
            store.record(FileReport(request_id, r.file_id, SUCCESS, object_name=r.object_name,
                                    total_bytes=size, sha256=r.sha256, events_in=r.events_in,
                                    events_out=r.events_out, seconds=0.0))
    except (DeliveryError, OSError) as err:
        log.warning("cache copy from %s failed (%s); transforming instead",
                    original.request_id, err)
        return False
    services.news.publish()
    return True


def submit(body: dict[str, Any], services: Services, owner: str | None = None) -> str:
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise ApiError(f"unknown field {unknown[0]!r}")
    codegen = _field(body, "codegen", "uproot-raw", CODEGENS)
    fmt = _field(body, "result-format", "root-file", FORMATS)
    destination = _field(body, "result-destination", "object-store", ("object-store",))
    title = body.get("title") or ""
    if not isinstance(title, str) or len(title) > MAX_TITLE:
        raise ApiError(f"title must be a string of at most {MAX_TITLE} characters")
    if "selection" not in body:
        raise ApiError("selection is required")
    try:
        selection = parse_selection(body["selection"]).to_json()
    except SelectionError as err:
        raise ApiError(f"bad selection: {err.reason}") from None
    has_did, has_list = body.get("did") is not None, body.get("file-list") is not None
    if has_did == has_list:
        raise ApiError("give exactly one of did and file-list")

    store, policy = services.store, services.policy
    lookup_error: str | None = None
    if has_list:
        files = check_file_list(body["file-list"], policy)
        did, finder = "file-list", "file-list"
    else:
        did = str(body["did"])
        try:
            resolved = resolve_did(did, policy)
            files, finder = resolved.files, resolved.finder
        except LookupFailed as err:
            files, finder, lookup_error = [], did.split("://", 1)[0] if "://" in did else "local", \
                err.reason

    reuse = body.get("reuse", True)
    if not isinstance(reuse, bool):
        raise ApiError("reuse must be true or false")
    key = cache_key(files, selection, fmt)
    original = store.find_reusable(key) if reuse and not lookup_error else None

    dataset_id = store.get_or_create_dataset(did, finder)
    store.update_dataset(dataset_id, lookup_status=lookup_error or "complete",
                         n_files=len(files))
    request_id = str(uuid.uuid4())
    store.create_request(
        request_id=request_id, title=title, did=did, dataset_id=dataset_id, selection=selection,
        codegen=codegen, result_format=fmt, result_destination=destination, owner=owner,
        cache_key=key, n_files=len(files), reused_from=original.request_id if original else None,
        status="Bad Dataset" if lookup_error else "Running", failure_info=lookup_error,
    )
    if lookup_error:
        return request_id
    store.add_files(request_id, list(enumerate(files)))
    if original is not None and _serve_from_cache(services, request_id, original):
        return request_id
    tasks = [FileTask(request_id, i, tuple(replicas), selection, fmt)
             for i, replicas in enumerate(files)]
    try:
        services.broker.publish(tasks)
    except TransientError:
        store.delete_request(request_id)
        raise
    return request_id

"""What the dashboard shows, as plain JSON-ready dicts (the pages and their polls share it).

Totals (events, bytes) come from one ``GROUP BY`` over result rows, never from
counters, so they agree with the request's files at the moment of the read.
Isolation is the caller's job: pass the owner filter and use ``owned()``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from api.store.engine import utcnow
from delivery.messages import FAILURE, SUCCESS

__all__ = ["request_list", "request_detail", "workers_view", "client_snippet",
           "MAX_REQUESTS", "MAX_FILES"]

MAX_REQUESTS = 500  # newest first; older ones stay reachable by id
MAX_FILES = 2000  # rows of the files table (failed files are always all listed)
MAX_POINTS = 400  # of the throughput plot


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() + "Z" if t else None


def _summary(row: Any, totals: tuple[Any, ...] | None, now: datetime) -> dict[str, Any]:
    events, events_in, nbytes, _busy = totals or (0, 0, 0, 0.0)
    elapsed = max(((row.finish_time or now) - row.submit_time).total_seconds(), 1e-3)
    return {
        "request_id": row.request_id, "title": row.title or "", "did": row.did,
        "owner": row.owner, "status": row.status, "failure_info": row.failure_info,
        "format": row.result_format, "files": row.files, "completed": row.completed,
        "failed": row.failed, "remaining": row.remaining, "events": int(events),
        "events_in": int(events_in), "bytes": int(nbytes),
        "rate": events_in / elapsed,  # events read per second of wall time
        "age": (now - row.submit_time).total_seconds(), "elapsed": elapsed,
        "submit_time": _iso(row.submit_time), "finish_time": _iso(row.finish_time),
        "reused_from": row.reused_from,
    }


def request_list(svc: Any, owner: str | None, status: str | None = None) -> list[dict[str, Any]]:
    rows = svc.store.list_requests(owner=owner)
    if status:
        rows = [r for r in rows if r.status == status]
    rows = rows[::-1][:MAX_REQUESTS]
    totals = svc.store.success_totals(owner=owner)
    now = utcnow()
    return [_summary(r, totals.get(r.request_id), now) for r in rows]


def _tree(selection: str) -> str:
    """The output tree's name: the first query's treename (or its rename)."""
    try:
        name = json.loads(selection)[0].get("treename")
    except (ValueError, IndexError, AttributeError, TypeError):
        return "Events"
    if isinstance(name, dict):
        name = next(iter(name.values()), None)
    if isinstance(name, list):
        name = name[0] if name else None
    return name if isinstance(name, str) else "Events"


def _literal(text: str) -> str:
    # JSON's ASCII-only string escapes are all valid in a Python string literal
    return json.dumps(text)


def client_snippet(base_url: str, request_id: str, fmt: str, auth: bool,
                   tree: str = "Events") -> str:
    """Python that downloads (checksum-verified) and loads this request's outputs.

    Every value goes in as a string literal (:func:`_literal`): a crafted tree name or
    Host header cannot turn into code in the reader's copy."""
    load = {
        "parquet": ("import awkward as ak",
                    "events = ak.concatenate([ak.from_parquet(p) for p in paths])"),
        "arrow": ("import awkward as ak\nimport pyarrow as pa",
                  "events = ak.concatenate([ak.from_arrow(pa.ipc.open_file(p).read_all())\n"
                  "                         for p in paths])"),
        "root-file": ("import uproot",
                      f"tree = {_literal(tree)}\n"
                      "events = uproot.concatenate([f\"{p}:{tree}\" for p in paths])"),
    }.get(fmt, ("import awkward as ak", "events = paths"))
    token = "  # your refresh token in $DELIVERY_TOKEN (or token=...)" if auth else ""
    return (f"{load[0]}\nfrom delivery import Client\n\n"
            f"request_id = {_literal(request_id)}\n"
            f"with Client({_literal(base_url)}) as client:{token}\n"
            f"    paths = [client.download(request_id, item, "
            f"{_literal('delivery-' + request_id[:8])})\n"
            f"             for item in client.results(request_id, status=\"success\")]\n"
            f"{load[1]}\n")


def _pretty(selection: str) -> str:
    try:
        return json.dumps(json.loads(selection), indent=2)
    except ValueError:
        return selection


def _series(verdicts: list[Any], start: datetime) -> list[list[float]]:
    """``[seconds since submit, cumulative events read, cumulative bytes]`` per success."""
    points, events, nbytes = [[0.0, 0, 0]], 0, 0
    for r in verdicts:
        if r.status != SUCCESS:
            continue
        events += r.events_in
        nbytes += r.total_bytes
        points.append([round((r.created_at - start).total_seconds(), 3), events, nbytes])
    if len(points) > MAX_POINTS:  # keep the shape, drop the density
        step = len(points) / MAX_POINTS
        points = [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]
    return points


def request_detail(svc: Any, row: Any, base_url: str,
                   running: dict[int, str] | None = None) -> dict[str, Any]:
    """Everything of the request page; ``running`` maps file ids to the worker on them."""
    now = utcnow()
    verdicts = svc.store.results(row.request_id)
    paths = svc.store.file_paths(row.request_id)
    by_file = {r.file_id: r for r in verdicts}
    running = running or {}
    files: list[dict[str, Any]] = []
    for fid in sorted(set(paths) | set(by_file)):
        r = by_file.get(fid)
        if len(files) >= MAX_FILES and (r is None or r.status != FAILURE):
            continue
        status = r.status if r else ("running" if fid in running else "pending")
        files.append({
            "file_id": fid, "path": paths.get(fid) or (r.path if r else None), "status": status,
            "seconds": r.seconds if r else None, "events_in": r.events_in if r else None,
            "events": r.events_out if r else None, "bytes": r.total_bytes if r else None,
            "error": r.error if r else None, "worker": running.get(fid),
            "time": _iso(r.created_at) if r else None})
    totals = svc.store.success_totals(request_id=row.request_id).get(row.request_id)
    return {
        **_summary(row, totals, now),
        "selection": _pretty(row.selection),
        "files_table": files, "files_shown": len(files),
        "series": _series(verdicts, row.submit_time),
        "snippet": client_snippet(base_url, row.request_id, row.result_format,
                                  bool(svc.settings.auth), _tree(row.selection)),
    }


def workers_view(svc: Any, visible: Any) -> dict[str, Any]:
    """Workers, queue and dead letters; files and errors of requests the caller may not
    see (``visible(request_id)`` is False) are masked."""
    workers = []
    for w in svc.ops.workers.workers():
        if w.get("request_id") and not visible(w["request_id"]):
            w = {**w, "request_id": None, "file_id": None, "file": "(another user's file)"}
        if w.get("last_error") and not visible(w.get("last_error_request")):
            w = {**w, "last_error": "(another user's file failed)"}
        workers.append(w)
    depth: dict[str, Any] = {}
    for name, read in (("queue_depth", svc.broker.depth), ("dead_letters", svc.broker.dead_depth)):
        try:
            depth[name] = read()
        except Exception:  # noqa: BLE001 - show the rest when the broker is down
            depth[name] = None
    return {"workers": workers, "live": sum(1 for w in workers if w["live"]), **depth}

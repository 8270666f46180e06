"""What each client subcommand of ``delivery`` does (the parser is in
:mod:`delivery.client.commands`).

Every failure is raised as a :class:`~delivery.errors.DeliveryError` (or
``ValueError``) and ends, through :func:`delivery.cli.main`, as one line on
stderr and exit 1. Only the client library is imported: no server, no
transformers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from delivery.client.client import FINAL, Client, DeliveryFailed, FileFailure
from delivery.client.query import Query
from delivery.client.tables import emit, num, progress, results_table, table
from delivery.errors import DeliveryError

__all__ = ["DEFAULT_URL", "cmd_cache", "cmd_cancel", "cmd_datasets", "cmd_delete",
           "cmd_download", "cmd_get", "cmd_list", "cmd_results", "cmd_status", "cmd_submit"]

DEFAULT_URL = "http://127.0.0.1:5000"


# -- inputs ----------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    url = args.url or os.environ.get("DELIVERY_URL") or DEFAULT_URL
    return Client(url, timeout=args.timeout)


def _selection(args: argparse.Namespace) -> Query | str:
    if args.selection is not None:
        if args.tree or args.columns or args.cut or args.define:
            raise DeliveryError("give either --selection or --tree/--columns/--cut/--define, "
                                "not both")
        text: str = args.selection
        if text.startswith("@"):
            try:
                return Path(text[1:]).read_text()
            except OSError as err:
                raise DeliveryError(f"cannot read selection file {text[1:]!r}: "
                                    f"{err.strerror}") from None
        return text
    if not args.tree:
        raise DeliveryError("give --selection JSON|@file, or --tree with --columns and --cut")
    query = Query(args.tree).columns(*(args.columns or []))
    for spec in args.define or []:
        name, sep, expr = spec.partition("=")
        if not sep or not name.strip() or not expr.strip():
            raise DeliveryError(f"--define must be NAME=EXPRESSION, not {spec!r}")
        query = query.define(name.strip(), expr.strip())
    for cut in args.cut or []:
        query = query.where(cut)
    return query


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    dataset: str | list[str]
    if args.did is not None:
        dataset = args.did
    else:
        # The service resolves paths itself: send local ones absolute.
        dataset = [f if "://" in f else os.path.abspath(f) for f in args.files]
    return {"Name": args.title, "Dataset": dataset, "Query": _selection(args),
            "Format": args.format}


# -- commands --------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        request_id = client.submit(_sample(args))
    emit(args, {"request_id": request_id}, lambda: request_id)
    return 0


_STATUS_FIELDS = ("request_id", "title", "status", "did", "result-format", "files",
                  "files-completed", "files-failed", "files-remaining", "submit-time",
                  "finish-time", "reused-from", "failure-info")


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.status(args.request_id)
    emit(args, found, lambda: table(
        ["field", "value"], [[k, num(found.get(k))] for k in _STATUS_FIELDS]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.list_requests()
    emit(args, found, lambda: table(
        ["request id", "title", "status", "files", "completed", "failed", "submitted"],
        [[r["request_id"], r.get("title") or "", r["status"], num(r.get("files")),
          num(r.get("files-completed")), num(r.get("files-failed")), r.get("submit-time")]
         for r in found]))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = client.results(args.request_id, args.status)
    emit(args, items, lambda: results_table(items))
    return 0


def _downloaded(item: dict[str, Any], path: Path) -> dict[str, Any]:
    return {"file-id": item["file-id"], "path": str(path), "bytes": item["total-bytes"]}


def cmd_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status(args.request_id)
        items = client.results(args.request_id, "success")
        done = [_downloaded(i, client.download(args.request_id, i, args.output)) for i in items]
    if status["status"] not in FINAL:
        progress(f"request {args.request_id} is {status['status']}: downloaded the "
                  f"{len(done)} file(s) finished so far")
    emit(args, done, lambda: "\n".join(d["path"] for d in done))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        message = client.cancel(args.request_id)
    emit(args, {"request_id": args.request_id, "message": message}, lambda: message)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        message = client.delete(args.request_id)
    emit(args, {"request_id": args.request_id, "message": message}, lambda: message)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.dataset_id is not None:
            one = client.dataset(args.dataset_id)
            emit(args, one, lambda: table(["field", "value"], [
                [k, num(v)] for k, v in one.items() if k != "files"]))
            return 0
        found = client.datasets()
    emit(args, found, lambda: table(
        ["id", "name", "finder", "lookup", "files", "bytes", "last used"],
        [[d["id"], d["name"], d.get("did_finder"), d.get("lookup_status"),
          num(d.get("n_files")), num(d.get("size")), d.get("last_used")] for d in found]))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Submit, follow with one progress line per file, download as files finish."""
    sample = _sample(args)
    with _client(args) as client:
        request_id = client.submit(sample)
        total = client.status(request_id).get("files") or 0
        progress(f"request {request_id}: {total} file(s)")
        done: list[dict[str, Any]] = []
        failures: list[FileFailure] = []
        try:
            for n, item in enumerate(client.follow(request_id, poll=args.poll,
                                                   deadline=args.deadline), 1):
                where = item.get("file-path") or f"file {item['file-id']}"
                if item["transform_status"] != "success":
                    reason = item.get("error") or "failed"
                    failures.append(FileFailure(args.title, item.get("file-path"), reason))
                    progress(f"[{n}/{total}] {where}: FAILED: {reason}")
                    continue
                path = client.download(request_id, item, args.output)
                done.append(_downloaded(item, path))
                progress(f"[{n}/{total}] {where}: {num(item.get('total-events'))} events, "
                          f"{num(item.get('total-bytes'))} bytes -> {path}")
        except KeyboardInterrupt:
            progress(f"interrupted; request {request_id} goes on "
                      f"(delivery cancel {request_id} stops it)")
            raise
        status = client.status(request_id)
    if status["status"] != "Complete":
        failures.append(FileFailure(args.title, None, f"request {request_id} ended "
                                    f"{status['status']}: {status.get('failure-info') or ''}"))
    if failures:
        raise DeliveryFailed(failures)
    emit(args, {"request_id": request_id, "files": done},
          lambda: "\n".join(d["path"] for d in done))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from delivery.client import cache

    if args.action == "clear":
        removed = cache.clear(older_than=args.older_than_days * 86400
                              if args.older_than_days is not None else None)
        emit(args, {"removed": removed}, lambda: f"removed {removed} cache entries")
        return 0
    entries = cache.list_entries()
    data: list[dict[str, Any]] = [{"key": e.key[:16], "sample": e.sample, "server": e.server,
             "request_id": e.request_id, "state": e.state, "files": len(e.files),
             "bytes": sum(f.size for f in e.files), "intact": e.intact()} for e in entries]
    emit(args, data, lambda: table(
        ["key", "sample", "server", "request", "state", "files", "bytes", "intact"],
        [[d["key"], d["sample"], d["server"], d["request_id"][:8], d["state"], d["files"],
          num(d["bytes"]), "yes" if d["intact"] else "no"] for d in data])
        + f"\n{len(data)} entries in {cache.cache_dir()}")
    return 0

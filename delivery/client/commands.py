"""The client half of the ``delivery`` command line: talk to a running service.

::

    delivery submit --files a.root b.root --tree Events --columns MET_pt --cut "MET_pt > 50"
    delivery status <id>            delivery list            delivery results <id>
    delivery download <id> -o out/  delivery cancel <id>     delivery delete <id>
    delivery datasets [<id>]
    delivery get --did 'local:///data/*.root' --selection @sel.json -o out/

The service is ``--url``, else ``$DELIVERY_URL``, else ``http://127.0.0.1:5000``.
Tables by default, ``--json`` for JSON on stdout. Progress goes to stderr. Every
failure is raised as a :class:`~delivery.errors.DeliveryError` (or ``ValueError``)
and ends, through :func:`delivery.cli.main`, as one line on stderr and exit 1.

Only the client library is imported here: no server, no transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from delivery.client.client import FINAL, FORMATS, Client, DeliveryFailed, FileFailure
from delivery.client.query import Query
from delivery.errors import DeliveryError

__all__ = ["register", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:5000"


# -- output ----------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns, two spaces apart; ``None`` prints as ``-``."""
    body = [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(list(headers))] + [line(b) for b in body])


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,}" if isinstance(value, int) else ("-" if value is None else str(value))


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2) if args.json else human())


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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
    _emit(args, {"request_id": request_id}, lambda: request_id)
    return 0


_STATUS_FIELDS = ("request_id", "title", "status", "did", "result-format", "files",
                  "files-completed", "files-failed", "files-remaining", "submit-time",
                  "finish-time", "reused-from", "failure-info")


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.status(args.request_id)
    _emit(args, found, lambda: table(
        ["field", "value"], [[k, _num(found.get(k))] for k in _STATUS_FIELDS]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.list_requests()
    _emit(args, found, lambda: table(
        ["request id", "title", "status", "files", "completed", "failed", "submitted"],
        [[r["request_id"], r.get("title") or "", r["status"], _num(r.get("files")),
          _num(r.get("files-completed")), _num(r.get("files-failed")), r.get("submit-time")]
         for r in found]))
    return 0


def _results_table(items: list[dict[str, Any]]) -> str:
    return table(
        ["file", "status", "events", "bytes", "seconds", "input", "output or error"],
        [[i["file-id"], i["transform_status"], _num(i.get("total-events")),
          _num(i.get("total-bytes")), f"{i.get('transform_time') or 0:.2f}", i.get("file-path"),
          i.get("s3-object-name") if i["transform_status"] == "success" else i.get("error")]
         for i in items])


def cmd_results(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = client.results(args.request_id, args.status)
    _emit(args, items, lambda: _results_table(items))
    return 0


def _downloaded(item: dict[str, Any], path: Path) -> dict[str, Any]:
    return {"file-id": item["file-id"], "path": str(path), "bytes": item["total-bytes"]}


def cmd_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status(args.request_id)
        items = client.results(args.request_id, "success")
        done = [_downloaded(i, client.download(args.request_id, i, args.output)) for i in items]
    if status["status"] not in FINAL:
        _progress(f"request {args.request_id} is {status['status']}: downloaded the "
                  f"{len(done)} file(s) finished so far")
    _emit(args, done, lambda: "\n".join(d["path"] for d in done))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        message = client.cancel(args.request_id)
    _emit(args, {"request_id": args.request_id, "message": message}, lambda: message)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        message = client.delete(args.request_id)
    _emit(args, {"request_id": args.request_id, "message": message}, lambda: message)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.dataset_id is not None:
            one = client.dataset(args.dataset_id)
            _emit(args, one, lambda: table(["field", "value"], [
                [k, _num(v)] for k, v in one.items() if k != "files"]))
            return 0
        found = client.datasets()
    _emit(args, found, lambda: table(
        ["id", "name", "finder", "lookup", "files", "bytes", "last used"],
        [[d["id"], d["name"], d.get("did_finder"), d.get("lookup_status"),
          _num(d.get("n_files")), _num(d.get("size")), d.get("last_used")] for d in found]))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Submit, follow with one progress line per file, download as files finish."""
    sample = _sample(args)
    with _client(args) as client:
        request_id = client.submit(sample)
        total = client.status(request_id).get("files") or 0
        _progress(f"request {request_id}: {total} file(s)")
        done: list[dict[str, Any]] = []
        failures: list[FileFailure] = []
        try:
            for n, item in enumerate(client.follow(request_id, poll=args.poll,
                                                   deadline=args.deadline), 1):
                where = item.get("file-path") or f"file {item['file-id']}"
                if item["transform_status"] != "success":
                    reason = item.get("error") or "failed"
                    failures.append(FileFailure(args.title, item.get("file-path"), reason))
                    _progress(f"[{n}/{total}] {where}: FAILED: {reason}")
                    continue
                path = client.download(request_id, item, args.output)
                done.append(_downloaded(item, path))
                _progress(f"[{n}/{total}] {where}: {_num(item.get('total-events'))} events, "
                          f"{_num(item.get('total-bytes'))} bytes -> {path}")
        except KeyboardInterrupt:
            _progress(f"interrupted; request {request_id} goes on "
                      f"(delivery cancel {request_id} stops it)")
            raise
        status = client.status(request_id)
    if status["status"] != "Complete":
        failures.append(FileFailure(args.title, None, f"request {request_id} ended "
                                    f"{status['status']}: {status.get('failure-info') or ''}"))
    if failures:
        raise DeliveryFailed(failures)
    _emit(args, {"request_id": request_id, "files": done},
          lambda: "\n".join(d["path"] for d in done))
    return 0


# -- argparse --------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=None,
                   help=f"service URL (default: $DELIVERY_URL, else {DEFAULT_URL})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP call")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _request_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--files", nargs="+", metavar="PATH", help="input files or URLs")
    source.add_argument("--did", help="a dataset identifier, e.g. local:///data/*.root")
    p.add_argument("--selection", default=None, help="uproot-raw selection JSON, or @file")
    p.add_argument("--tree", default=None, help="tree to read (instead of --selection)")
    p.add_argument("--columns", nargs="+", default=None, metavar="COLUMN",
                   help="output columns (names, or globs without --define)")
    p.add_argument("--cut", action="append", default=None,
                   help="keep events passing this; repeat to AND several")
    p.add_argument("--define", action="append", default=None, metavar="NAME=EXPR",
                   help="a derived output column; repeatable")
    p.add_argument("--format", default="parquet", choices=FORMATS)
    p.add_argument("--title", default="cli", help="request title (default: cli)")


def cmd_cache(args: argparse.Namespace) -> int:
    from delivery.client import cache

    if args.action == "clear":
        removed = cache.clear(older_than=args.older_than_days * 86400
                              if args.older_than_days is not None else None)
        _emit(args, {"removed": removed}, lambda: f"removed {removed} cache entries")
        return 0
    entries = cache.list_entries()
    data: list[dict[str, Any]] = [{"key": e.key[:16], "sample": e.sample, "server": e.server,
             "request_id": e.request_id, "state": e.state, "files": len(e.files),
             "bytes": sum(f.size for f in e.files), "intact": e.intact()} for e in entries]
    _emit(args, data, lambda: table(
        ["key", "sample", "server", "request", "state", "files", "bytes", "intact"],
        [[d["key"], d["sample"], d["server"], d["request_id"][:8], d["state"], d["files"],
          _num(d["bytes"]), "yes" if d["intact"] else "no"] for d in data])
        + f"\n{len(data)} entries in {cache.cache_dir()}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client subcommands to the ``delivery`` parser's subparsers."""
    common = [_common()]

    def add(name: str, func: Callable[[argparse.Namespace], int],
            text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, parents=common)
        p.set_defaults(func=func)
        return p

    _request_args(add("submit", cmd_submit, "submit a transformation request; prints its id"))

    add("status", cmd_status, "one request's status").add_argument("request_id")
    add("list", cmd_list, "all requests")

    r = add("results", cmd_results, "per-file results of a request")
    r.add_argument("request_id")
    r.add_argument("--status", choices=["success", "failure"], default=None)

    d = add("download", cmd_download, "download a request's outputs (size-checked)")
    d.add_argument("request_id")
    d.add_argument("-o", "--output", required=True, help="destination directory")

    add("cancel", cmd_cancel, "cancel a running request").add_argument("request_id")
    add("delete", cmd_delete, "delete a request and its outputs").add_argument("request_id")
    add("datasets", cmd_datasets, "known datasets, or one by id").add_argument(
        "dataset_id", nargs="?", type=int, default=None)

    c = sub.add_parser("cache", help="the local client cache: list or clear")
    c.add_argument("action", choices=["list", "clear"])
    c.add_argument("--older-than-days", type=float, default=None)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cache)

    g = add("get", cmd_get, "submit, follow and download in one step")
    _request_args(g)
    g.add_argument("-o", "--output", required=True, help="destination directory")
    g.add_argument("--poll", type=float, default=30.0, help="long-poll seconds per call")
    g.add_argument("--deadline", type=float, default=None, help="give up after this many seconds")

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

This module is the parser; :mod:`delivery.client.actions` does the work and
:mod:`delivery.client.tables` prints. Only the client library is imported here:
no server, no transformers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from delivery.client.actions import (
    DEFAULT_URL,
    cmd_cache,
    cmd_cancel,
    cmd_datasets,
    cmd_delete,
    cmd_download,
    cmd_get,
    cmd_list,
    cmd_results,
    cmd_status,
    cmd_submit,
)
from delivery.client.client import FORMATS

__all__ = ["register", "DEFAULT_URL"]


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

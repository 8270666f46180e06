"""The ``delivery`` command line.

Engine commands (``transform``, ``generate``, ``demo``) import the
transformers lazily, so the client half of this package stays light. Every
failure ends as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from delivery.errors import DeliveryError
from delivery.policy import SourcePolicy, is_local
from delivery.selection import parse_selection

__all__ = ["main"]



def _read_selection(text: str) -> Any:
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text()
        except OSError as err:
            raise DeliveryError(f"cannot read selection file {text[1:]!r}: {err.strerror}") from None
    return text


def _policy(inputs: Sequence[str]) -> SourcePolicy:
    # A physicist's own command line may read the local files it names, unless the
    # operator configured roots; a service always configures them.
    local = [os.path.dirname(os.path.realpath(p.split("|")[0].removeprefix("file://")))
             for p in inputs if is_local(p.split("|")[0])]
    return SourcePolicy.from_env(default_roots=local)


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ["input", "events in", "events out", "bytes", "seconds", "status"]
    body = [[r["input"], f"{r['events_in']:,}", f"{r['events_out']:,}", f"{r['bytes']:,}",
             f"{r['seconds']:.2f}", r["error"] or "ok"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    return "\n".join([line] + ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True))
                               for b in body])


def cmd_transform(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from transformers.run import TransformOptions, run_file

    selection = parse_selection(_read_selection(args.selection))
    policy = _policy(args.inputs)
    options = TransformOptions(format=args.format, step_bytes=int(args.step_mb * 2**20),
                               numba=args.numba)
    rows = []
    for spec in args.inputs:
        replicas = spec.split("|")
        result = run_file(replicas, selection, args.output, policy=policy,
                          request_id=args.request_id, options=options)
        rows.append(asdict(result))
        if result.error:
            print(f"error: {result.input}: {result.error}", file=sys.stderr)
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 1 if any(r["error"] for r in rows) else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from transformers.generate import generate

    summary = generate(args.output, args.events, layout=args.layout, codec=args.codec,
                       level=args.level, seed=args.seed, basket_entries=args.basket_entries)
    print(f"wrote {summary.path}: {summary.n_events:,} events, {summary.n_branches} branches, "
          f"{summary.layout}, {summary.codec}, {summary.n_bytes / 1e6:.1f} MB "
          f"in {summary.seconds:.1f} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from delivery.demo import run_demo

    return run_demo(Path(args.workdir) if args.workdir else None, args.events, args.files,
                    args.workers)


def cmd_serve(args: argparse.Namespace) -> int:
    from api.serve import serve
    from delivery.config import Settings
    from delivery.logs import setup_logging

    setup_logging(args.log_format)
    settings = Settings.from_env(**_overrides(args))
    serve(settings, args.host, args.port, args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from delivery.broker import open_broker
    from delivery.config import Settings
    from delivery.logs import setup_logging
    from delivery.objects import open_store
    from delivery.preflight import mask_url  # never print the broker password
    from transformers.activity import Activity, Heartbeat, TrackedWorker, worker_name
    from transformers.isolate import Limits

    setup_logging(args.log_format)
    settings = Settings.from_env(**_overrides(args))
    if settings.embedded_broker:
        raise DeliveryError("delivery worker needs DELIVERY_BROKER_URL; without a broker, "
                            "'delivery serve --workers N' runs the workers itself")
    reporter: Any
    if settings.api_url and settings.service_token:
        from transformers.reporters import HttpReporter

        reporter = HttpReporter(settings.api_url, settings.service_token)
    else:
        from api.store import RequestStore
        from transformers.reporters import StoreReporter

        reporter = StoreReporter(RequestStore(settings.database_url))
    broker = open_broker(settings.broker_url, settings.queue)
    policy = SourcePolicy.create(settings.allowed_roots)
    activity = Activity(worker_name())
    # Heartbeats go to the API's registry (the dashboard's workers page, /metrics).
    beat = Heartbeat([activity], reporter.heartbeat).start() \
        if hasattr(reporter, "heartbeat") else None
    print(f"worker consuming {settings.queue} at {mask_url(settings.broker_url or '')}",
          flush=True)
    logging.getLogger("delivery.worker").info("worker %s consuming %s", activity.name,
                                              settings.queue)
    TrackedWorker(open_store(settings), reporter, policy, activity=activity,
                  limits=Limits.from_settings(settings)).run(broker)
    if beat is not None:
        beat.stop()
    broker.close()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from delivery.config import Settings
    from delivery.up import up

    return up(Settings.from_env(**_overrides(args)), args.host, args.port, args.workers,
              args.grace)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        out["state_dir"] = Path(args.state_dir)
        if not os.environ.get("DELIVERY_DATABASE_URL"):
            out["database_url"] = f"sqlite:///{Path(args.state_dir) / 'delivery.db'}"
    if getattr(args, "allowed_roots", None):
        out["allowed_roots"] = tuple(r for r in args.allowed_roots.split(os.pathsep) if r)
    return out


def _parser() -> argparse.ArgumentParser:
    from delivery import __version__

    p = argparse.ArgumentParser(prog="delivery", description="Columnar data delivery for HEP.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transform", help="run the worker's transform on local or remote files")
    t.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="path or URL (root://, https://, s3://); 'a|b' lists replicas")
    t.add_argument("--selection", required=True, help="uproot-raw selection JSON, or @file")
    t.add_argument("--format", default="parquet", choices=["parquet", "arrow", "root-file"])
    t.add_argument("--output", required=True, help="output directory")
    t.add_argument("--request-id", default="local", help="names outputs (default: local)")
    t.add_argument("--step-mb", type=float, default=64.0, help="memory per read step")
    t.add_argument("--numba", action="store_true",
                   help="evaluate cuts with compiled numba kernels (see bench/bench_engine.py)")
    t.add_argument("--json", action="store_true", help="print results as JSON")
    t.set_defaults(func=cmd_transform)

    g = sub.add_parser("generate", help="write a NanoAOD-like ROOT file")
    g.add_argument("output")
    g.add_argument("--events", type=int, default=100_000)
    g.add_argument("--layout", default="ttree", choices=["ttree", "rntuple"])
    g.add_argument("--codec", default="ZSTD", choices=["ZLIB", "LZ4", "ZSTD", "LZMA", "NONE"])
    g.add_argument("--level", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--basket-entries", type=int, default=10_000)
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("serve", help="run the API (and, with no broker configured, workers)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--workers", type=int, default=2, help="embedded worker processes")
    s.add_argument("--state-dir", default=None, help="overrides DELIVERY_STATE_DIR")
    s.add_argument("--allowed-roots", default=None, help="overrides DELIVERY_ALLOWED_ROOTS")
    s.add_argument("--log-format", default=None, choices=["json", "text", "auto"],
                   help="log lines (default DELIVERY_LOG_FORMAT, else json unless a terminal)")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="consume files from the configured broker")
    w.add_argument("--allowed-roots", default=None, help="overrides DELIVERY_ALLOWED_ROOTS")
    w.add_argument("--log-format", default=None, choices=["json", "text", "auto"],
                   help="log lines (default DELIVERY_LOG_FORMAT, else json unless a terminal)")
    w.set_defaults(func=cmd_worker)

    u = sub.add_parser("up", help="check the configured services, then run the API and N "
                                  "supervised workers on this machine")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000, help="the API's port (0: any free one)")
    u.add_argument("--workers", type=int, default=2, help="worker processes")
    u.add_argument("--grace", type=float, default=300.0,
                   help="seconds workers get to finish their file on Ctrl-C, then killed")
    u.add_argument("--state-dir", default=None, help="overrides DELIVERY_STATE_DIR")
    u.add_argument("--allowed-roots", default=None, help="overrides DELIVERY_ALLOWED_ROOTS")
    u.set_defaults(func=cmd_up)

    d = sub.add_parser("demo", help="run the whole service on this machine, end to end")
    d.add_argument("--events", type=int, default=100_000, help="events per generated file")
    d.add_argument("--files", type=int, default=4)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--workdir", default=None)
    d.set_defaults(func=cmd_demo)

    from delivery.client.commands import register  # submit, status, list, get, ...

    register(sub)
    from api.accounts import register as register_accounts  # users, tokens (operators)

    register_accounts(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeliveryError as err:
        print(f"error: {err.reason}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug of ours: still one line, the trace on request
        if os.environ.get("DELIVERY_DEBUG"):
            raise
        print(f"error: internal error ({type(err).__name__}: {err}); "
              "set DELIVERY_DEBUG=1 for the trace", file=sys.stderr)
        return 70

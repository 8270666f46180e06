"""What the ``delivery`` client commands print: aligned tables, JSON, progress lines.

Tables go to stdout, or JSON with ``--json``; progress and notes go to stderr so
that stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["emit", "num", "progress", "results_table", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns, two spaces apart; ``None`` prints as ``-``."""
    body = [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(list(headers))] + [line(b) for b in body])


def num(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,}" if isinstance(value, int) else ("-" if value is None else str(value))


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2) if args.json else human())


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def results_table(items: list[dict[str, Any]]) -> str:
    return table(
        ["file", "status", "events", "bytes", "seconds", "input", "output or error"],
        [[i["file-id"], i["transform_status"], num(i.get("total-events")),
          num(i.get("total-bytes")), f"{i.get('transform_time') or 0:.2f}", i.get("file-path"),
          i.get("s3-object-name") if i["transform_status"] == "success" else i.get("error")]
         for i in items])

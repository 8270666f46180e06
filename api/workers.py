"""Worker heartbeats: who is alive, what each is on, how fast it goes.

``POST /internal/heartbeat`` (the workers' service credential) takes a snapshot
from :mod:`transformers.activity`; the embedded pool hands its slots'
snapshots to :meth:`WorkerRegistry.beat` directly.

Kept in memory, in the API process, with an expiry: a worker is *live* while
its last beat is at most :data:`LIVE_SECONDS` old and is forgotten after
:data:`FORGET_SECONDS`. So with several API instances each one knows the
workers that reported to it; the dashboard and ``/metrics`` of one instance
show a part of the fleet (a shared table would fix that, at a write per beat).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from flask import Blueprint, jsonify, request

from api.errors import ApiError, read_json

__all__ = ["WorkerRegistry", "blueprint", "LIVE_SECONDS", "FORGET_SECONDS"]

blueprint = Blueprint("workers", __name__)
LIVE_SECONDS = 20.0  # four missed beats of 5 s
FORGET_SECONDS = 600.0
MAX_WORKERS = 2000  # a bound on memory whatever the senders do
_TEXT = {"worker": 200, "kind": 20, "request_id": 64, "file": 2000, "last_error": 2000,
         "last_error_request": 64}
_NUMBERS = ("pid", "started", "sent", "file_id", "file_started", "files_done", "files_failed",
            "events_in", "events_out", "bytes", "busy_seconds", "last_error_time")


def clean(body: dict[str, Any]) -> dict[str, Any]:
    """The known fields of a heartbeat, checked and cut to size; ApiError if unusable."""
    name = body.get("worker")
    if not isinstance(name, str) or not name.strip():
        raise ApiError("heartbeat needs a worker name")
    out: dict[str, Any] = {}
    for key, limit in _TEXT.items():
        value = body.get(key)
        out[key] = value[:limit] if isinstance(value, str) else None
    for key in _NUMBERS:
        out[key] = _number(body.get(key))
    return out


def _number(value: Any) -> int | float | None:
    """A finite JSON number (no bool, NaN, infinity or int too big for a float), else None."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return value if math.isfinite(float(value)) else None
    except OverflowError:
        return None


class WorkerRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: dict[str, tuple[float, dict[str, Any]]] = {}

    def beat(self, snapshot: dict[str, Any]) -> None:
        state = clean(snapshot)
        now = time.time()
        with self._lock:
            self._beats[state["worker"]] = (now, state)
            if len(self._beats) > MAX_WORKERS:
                self._forget(now)
                while len(self._beats) > MAX_WORKERS:  # still full: drop the stalest
                    oldest = min(self._beats, key=lambda k: self._beats[k][0])
                    del self._beats[oldest]

    def _forget(self, now: float) -> None:
        for name in [n for n, (seen, _) in self._beats.items() if now - seen > FORGET_SECONDS]:
            del self._beats[name]

    def workers(self, include_lost: bool = True) -> list[dict[str, Any]]:
        """Each worker's last snapshot plus ``last_seen``, ``age``, ``live`` and ``rate``."""
        now = time.time()
        with self._lock:
            self._forget(now)
            items = list(self._beats.values())
        out = []
        for seen, state in sorted(items, key=lambda item: item[1]["worker"]):
            live = now - seen <= LIVE_SECONDS
            if not live and not include_lost:
                continue
            busy = state.get("busy_seconds") or 0.0
            out.append({**state, "last_seen": seen, "age": round(now - seen, 1), "live": live,
                        "events_per_second": _rate(state.get("events_in"), busy),
                        "bytes_per_second": _rate(state.get("bytes"), busy)})
        return out


def _rate(amount: float | None, seconds: float) -> float:
    rate = (amount or 0) / seconds if seconds > 0 else 0.0
    return rate if math.isfinite(rate) else 0.0


@blueprint.post("/internal/heartbeat")
def heartbeat() -> Any:
    from api.native import _service_only  # the same credential as /internal/results
    from api.operations import operations

    _service_only()
    operations().workers.beat(read_json(request))
    return jsonify({"ok": True})

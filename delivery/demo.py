"""``delivery demo``: the whole service, end to end, on the embedded default.

It generates NanoAOD-like files, starts the API with in-process worker
processes (SQLite, a local result directory, no broker), submits a request
over HTTP exactly as a ServiceX client would, follows it with the long poll,
downloads each output as soon as it is ready, loads them into awkward arrays
and checks them against a direct uproot read. Then it shuts everything down.
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["run_demo", "DEMO_SELECTION"]

DEMO_SELECTION = [{
    "treename": "Events",
    "expressions": ["run", "event", "MET_pt", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge",
                    "Muon_pt * cosh(Muon_eta)", "count(Jet_pt > 30)"],
    "cut": "count(Muon_pt > 20) >= 2 and MET_pt < 200",
}]  # fmt: skip


def _call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=90) as response:  # noqa: S310 - our own loopback
        payload = response.read()
        return json.loads(payload) if "json" in response.headers.get("Content-Type", "") \
            else payload


def run_demo(workdir: Path | None, events: int, files: int, workers: int) -> int:
    import logging

    import awkward as ak
    import pyarrow.parquet as pq
    from werkzeug.serving import make_server

    from api.app import create_app
    from api.serve import build_services, start_background
    from delivery.config import Settings
    from transformers.generate import generate

    work = Path(workdir or tempfile.mkdtemp(prefix="delivery-demo-"))
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    paths = [inputs / f"nanoaod-like-{i}.root" for i in range(files)]
    for i, path in enumerate(paths):
        if not path.exists():
            print(f"generating {events:,} NanoAOD-like events into {path} ...", flush=True)
            generate(path, events, seed=i, codec="ZSTD")

    settings = Settings.from_env({"DELIVERY_STATE_DIR": str(work / "state")},
                                 allowed_roots=(str(inputs),))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log in the demo
    services = build_services(settings)
    running = start_background(services, workers)
    server = make_server("127.0.0.1", 0, create_app(services), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}"
    print(f"service up at {api}: {workers} worker processes, SQLite and local results "
          f"in {settings.state_dir}")
    try:
        return _follow(api, paths, ak, pq)
    finally:
        server.shutdown()
        running.close()


def _follow(api: str, paths: list[Path], ak: Any, pq: Any) -> int:
    print("selection:", json.dumps(DEMO_SELECTION[0]))
    start = time.perf_counter()
    request_id = _call(f"{api}/servicex/transformation", "POST", {
        "title": "demo", "selection": json.dumps(DEMO_SELECTION), "codegen": "uproot-raw",
        "result-destination": "object-store", "result-format": "parquet",
        "file-list": [str(p) for p in paths]})["request_id"]
    print(f"submitted request {request_id}")
    arrays, first, after = [], None, None
    while True:
        query = f"?timeout=30{'&after=' + after if after else ''}"
        news = _call(f"{api}/api/v1/requests/{request_id}/wait{query}")
        for item in news["results"]:
            after = item["created_at"]
            if item["transform_status"] != "success":
                print(f"  file {item['file-path']}: FAILED: {item['error']}")
                continue
            first = first or time.perf_counter() - start
            payload = _call(f"{api}/api/v1/requests/{request_id}/files/{item['file-id']}"
                            "/download")
            assert len(payload) == item["total-bytes"], "short download"
            arrays.append(ak.from_arrow(pq.read_table(io.BytesIO(payload))))
            print(f"  file {Path(item['file-path']).name}: {item['total-events']:,} events, "
                  f"{item['total-bytes'] / 1e6:.2f} MB, downloaded", flush=True)
        status = news["status"]
        if status["status"] in ("Complete", "Fatal", "Canceled", "Bad Dataset"):
            break
    seconds = time.perf_counter() - start
    print(f"request {status['status']}: {status['files-completed']} of {status['files']} files "
          f"({status['files-failed']} failed) in {seconds:.2f} s; first result after "
          f"{(first or seconds) * 1000:.0f} ms")
    if not arrays:
        return 1
    events = ak.concatenate(arrays)
    total = sum(_entries(p) for p in paths)
    print(f"{len(events):,} of {total:,} events pass the cut "
          f"({total / seconds:,.0f} events/s end to end)")
    lead = ak.max(events["Muon_pt"], axis=1)
    print(f"leading muon pt: mean {ak.mean(lead):.1f} GeV; mean jets with pt > 30: "
          f"{ak.mean(events['count(Jet_pt > 30)']):.2f}")
    ok = bool(ak.all(ak.sum(events["Muon_pt"] > 20, axis=1) >= 2))
    print("check: every event delivered passes the cut:", "yes" if ok else "NO")
    return 0 if ok and status["files-failed"] == 0 else 1


def _entries(path: Path) -> int:
    import uproot

    with uproot.open(path) as f:
        return int(f["Events"].num_entries)

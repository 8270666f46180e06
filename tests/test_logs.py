"""Structured logs: every line is JSON, worker lines carry request_id and file_id, API
errors carry a correlation id that is also in the log line."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack import REPO, real_stack

from delivery.logs import JsonFormatter, log_context, resolve_format, setup_logging
from transformers.generate import generate

SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_pt"]}])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logs-inputs")
    generate(root / "nano.root", 3000, seed=1, basket_entries=1000)
    (root / "corrupt.root").write_bytes(b"no ROOT here " * 100)
    return root


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger's JSON lines, restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    setup_logging("json", stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_line_is_one_json_object_with_the_ids(captured: io.StringIO) -> None:
    log = logging.getLogger("delivery.test")
    with log_context(request_id="r-1", file_id=7):
        log.info("working on %s", "it")
        with log_context(file_id=8):
            log.warning("inner")
    log.info("outside", extra={"correlation_id": "c0ffee00"})
    try:
        raise ValueError("boom\nwith a newline")
    except ValueError:
        log.exception("failed")
    first, inner, outside, failed = lines(captured.getvalue())
    assert set(first) == {"time", "level", "logger", "message", "request_id", "file_id"}
    assert (first["message"], first["request_id"], first["file_id"]) == ("working on it", "r-1", 7)
    assert first["level"] == "INFO" and first["logger"] == "delivery.test"
    assert first["time"].endswith("Z")
    assert (inner["request_id"], inner["file_id"]) == ("r-1", 8)
    assert "request_id" not in outside and outside["correlation_id"] == "c0ffee00"
    assert "ValueError: boom" in failed["exception"]
    assert len(captured.getvalue().splitlines()) == 4  # the newline stayed inside the JSON


def test_format_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("DELIVERY_LOG_FORMAT", raising=False)
    assert resolve_format(None, io.StringIO()) == "json"  # a pipe, a file, a container log
    assert resolve_format(None, Tty()) == "text"  # a person at a terminal
    monkeypatch.setenv("DELIVERY_LOG_FORMAT", "json")
    assert resolve_format(None, Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError):
        resolve_format("xml")
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)


def test_worker_lines_carry_request_and_file(data_dir: Path, tmp_path: Path,
                                             captured: io.StringIO) -> None:
    from delivery.messages import FileReport, FileTask
    from delivery.objects.local import LocalStore
    from delivery.policy import SourcePolicy
    from delivery.selection import parse_selection
    from transformers.activity import Activity, TrackedWorker

    class Reporter:
        def __init__(self) -> None:
            self.reports: list[FileReport] = []

        def record(self, report: FileReport) -> None:
            self.reports.append(report)

        def pending(self, request_id: str, file_id: int) -> bool:
            return True

    activity = Activity("test-worker")
    worker = TrackedWorker(LocalStore(tmp_path / "out"), Reporter(),
                           SourcePolicy.create([data_dir]), scratch=tmp_path / "scratch",
                           activity=activity)
    selection = parse_selection(SELECTION).to_json()
    for fid, name in enumerate(["nano.root", "corrupt.root"]):
        worker.handle(FileTask("req-42", fid, (str(data_dir / name),), selection, "parquet"), 1)
    recorded = [x for x in lines(captured.getvalue()) if "recorded" in x["message"]]
    assert [(x["request_id"], x["file_id"]) for x in recorded] == [("req-42", 0), ("req-42", 1)]
    snap = activity.snapshot()
    assert (snap["files_done"], snap["files_failed"], snap["events_in"]) == (1, 1, 3000)
    assert "corrupt.root" in snap["last_error"] and snap["file"] is None


def _call(url: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def _wait(url: str, rid: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if _call(f"{url}/servicex/transformation/{rid}")[1]["status"] == "Complete":
            return
        time.sleep(0.3)
    raise AssertionError(f"{rid} did not complete")


def test_delivery_serve_logs_json_with_ids_and_correlation(data_dir: Path,
                                                           tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DELIVERY_LOG_FORMAT": ""}  # the default
    proc = subprocess.Popen(
        [sys.executable, "-m", "delivery", "serve", "--port", "0", "--workers", "1",
         "--state-dir", str(tmp_path / "state"), "--allowed-roots", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        url = banner.split("http://", 1)[1].split(" ", 1)[0]
        url = "http://" + url.rstrip(";")
        code, answer, _ = _call(url + "/servicex/transformation", {
            "file-list": [str(data_dir / "nano.root"), str(data_dir / "corrupt.root")],
            "selection": SELECTION, "result-format": "parquet", "reuse": False})
        assert code == 200, answer
        rid = answer["request_id"]
        _wait(url, rid)
        code, error, headers = _call(f"{url}/servicex/transformation/{rid}x")
        assert code == 404 and error["correlation_id"] == headers["X-Correlation-ID"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    parsed = lines(err)  # every line: json.loads raises on any other
    assert parsed, "no log lines"
    worker = [x for x in parsed if x["logger"] == "delivery.worker" and "recorded" in x["message"]]
    assert sorted((x["request_id"], x["file_id"]) for x in worker) == [(rid, 0), (rid, 1)]
    errors = [x for x in parsed if x.get("correlation_id") == error["correlation_id"]
              and x["level"] == "WARNING"]
    assert len(errors) == 1 and "404" in errors[0]["message"]
    assert errors[0]["request_id"] == rid + "x"


def test_delivery_worker_logs_json_with_ids(data_dir: Path, tmp_path: Path,
                                            s3_endpoint: str) -> None:
    with real_stack(tmp_path, [data_dir], s3_endpoint, workers=1) as stack:
        code, answer, _ = _call(stack.url + "/servicex/transformation", {
            "file-list": [str(data_dir / "nano.root"), str(data_dir / "corrupt.root")],
            "selection": SELECTION, "result-format": "parquet", "reuse": False})
        assert code == 200, answer
        rid = answer["request_id"]
        _wait(stack.url, rid)
        (proc,) = stack.workers
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    parsed = lines(err.decode())
    recorded = [x for x in parsed if "recorded" in x["message"]]
    assert sorted((x["request_id"], x["file_id"]) for x in recorded) == [(rid, 0), (rid, 1)]
    assert {"time", "level", "logger", "message"} <= set.intersection(*(set(x) for x in parsed))

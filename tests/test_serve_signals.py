"""`delivery serve` stops cleanly on SIGTERM (what Kubernetes and `delivery up` send)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from transformers.generate import generate


def test_sigterm_stops_api_and_embedded_workers(tmp_path: Path) -> None:
    generate(tmp_path / "in.root", 2000, seed=2, basket_entries=1000)
    env = {**os.environ, "DELIVERY_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "delivery", "serve", "--port", "0",
                             "--workers", "2", "--log-format", "text",
                             "--allowed-roots", str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"http://[\d.]+:\d+", proc.stdout.readline())
        assert found
        url = found.group(0)
        body = {"title": "t", "codegen": "uproot-raw", "result-format": "parquet",
                "file-list": [str(tmp_path / "in.root")],
                "selection": json.dumps([{"treename": "Events", "filter_name": ["nMuon"]}])}
        request_id = httpx.post(f"{url}/servicex/transformation", json=body,
                                timeout=30).json()["request_id"]
        status = httpx.get(f"{url}/api/v1/requests/{request_id}/wait?timeout=60",
                           timeout=90).json()["status"]
        assert status["files-completed"] == 1, status
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # the embedded worker process that did the file
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, alive
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_never_prints_the_broker_password(tmp_path: Path) -> None:
    from stack import _rabbit_or_skip

    broker = "amqp://guest:guest@127.0.0.1:5672/%2F"
    _rabbit_or_skip(broker)
    env = {**os.environ, "DELIVERY_STATE_DIR": str(tmp_path / "state"),
           "DELIVERY_BROKER_URL": broker, "DELIVERY_QUEUE": f"test.serve.{os.getpid()}"}
    proc = subprocess.Popen([sys.executable, "-m", "delivery", "serve", "--port", "0",
                             "--log-format", "text"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "API only" in first and "guest:***@" in first and "guest:guest" not in first
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(broker))
        chan = conn.channel()
        for name in (env["DELIVERY_QUEUE"], env["DELIVERY_QUEUE"] + ".dead"):
            chan.queue_delete(name)
        conn.close()

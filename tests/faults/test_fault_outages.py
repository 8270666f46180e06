"""The service's own dependencies fail under it: RabbitMQ, S3, PostgreSQL.

Each outage hits a request in flight; the system recovers, loses nothing (every
input exactly once), and while the dependency is down the API answers 503 with
one line of JSON, never a 500 or a trace. The broker, database and S3 server
stopped here are private ones (``private.py``): the machine's shared servers
are never touched.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    ALL,
    LIGHT,
    Faults,
    Inputs,
    Pause,
    assert_exactly_once,
    call,
    fault_stack,
    final,
    submit,
    wait_until,
)
from private import Moto, PrivatePostgres, PrivateRabbit
from servers import LOOPBACK, free_port

from delivery.objects.s3 import DEFAULT_PART_SIZE

pytestmark = pytest.mark.integration


def probe(faults: Faults, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(faults.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def assert_503(code: int, raw: bytes, words: str) -> None:
    """503, one line of JSON with a message naming the dependency, no trace."""
    assert code == 503, (code, raw[:500])
    assert raw.rstrip(b"\n").count(b"\n") == 0, raw
    answer = json.loads(raw)
    assert answer["status"] == 503 and words in answer["message"], answer
    assert "Traceback" not in answer["message"] and "secret" not in answer["message"]


# ---------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------


@pytest.fixture
def rabbit() -> Iterator[PrivateRabbit]:
    node = PrivateRabbit()
    try:
        node.start()
        yield node
    finally:
        node.close()


def test_rabbitmq_restarted_mid_request(rabbit: PrivateRabbit, inputs: Inputs, tmp_path: Path,
                                        s3_endpoint: str) -> None:
    with fault_stack(tmp_path, [inputs.root], s3_endpoint, broker_url=rabbit.url) as faults:
        pause = Pause(tmp_path / "pause", "before-report")
        workers = faults.start_workers(2, pause.env)
        files = inputs.link("small", "rabbit", 6)
        request_id = submit(faults.stack, [str(f) for f in files], selection=LIGHT)
        pause.wait(workers=2)  # two files done but unreported, four queued
        rabbit.stop()
        body = {"title": "t", "selection": LIGHT, "codegen": "uproot-raw",
                "result-format": "parquet", "file-list": [str(files[0])], "reuse": False}
        assert_503(*probe(faults, "POST", "/servicex/transformation", body),
                   "broker unavailable")
        assert call(faults.stack, "GET", f"/servicex/transformation/{request_id}")[0] == 200
        rabbit.start()  # same data directory: the durable queue and its messages come back
        pause.resume()
        assert_exactly_once(faults, request_id, files)
        # The workers reconnected instead of dying, and new work flows again.
        assert all(w.poll() is None for w in workers), faults.logs_text()
        again = submit(faults.stack, [str(f) for f in inputs.link("small", "rabbit-after", 2)],
                       selection=LIGHT)
        assert final(faults, again)["status"] == "Complete"
        assert faults.stack.services.broker.dead_depth() == 0


def test_broker_down_at_submit_is_503_and_leaves_no_request(
        inputs: Inputs, tmp_path: Path, s3_endpoint: str) -> None:
    from stack import Stack, _http, _postgres_database

    from api.serve import build_services
    from delivery.config import Settings

    port = free_port()  # nothing listens there
    with _postgres_database() as database_url:
        services = build_services(Settings.from_env({
            "DELIVERY_STATE_DIR": str(tmp_path / "state"),
            "DELIVERY_DATABASE_URL": database_url,
            "DELIVERY_BROKER_URL": f"amqp://guest:guest@{LOOPBACK}:{port}/%2F",
            "DELIVERY_QUEUE": f"test.down.{port}",
            "DELIVERY_S3_ENDPOINT": s3_endpoint.split("://", 1)[1],
            "DELIVERY_S3_ACCESS_KEY": "writer", "DELIVERY_S3_SECRET_KEY": "writer-secret",
            "DELIVERY_ALLOWED_ROOTS": str(inputs.root),
        }))
        try:
            with _http(services) as url:
                faults = Faults(Stack(url, services, "real"), tmp_path)
                body = {"title": "broker down", "selection": LIGHT, "codegen": "uproot-raw",
                        "result-format": "parquet", "file-list": [str(inputs.root / "small.root")]}
                for _ in range(2):  # nothing cached between attempts either
                    started = time.monotonic()
                    code, raw = probe(faults, "POST", "/servicex/transformation", body)
                    assert_503(code, raw, f"broker unavailable at {LOOPBACK}:{port}")
                    assert time.monotonic() - started < 15 and b"guest" not in raw
                code, listing = call(faults.stack, "GET", "/servicex/transformation")
                assert code == 200 and listing["requests"] == []
        finally:
            services.broker.close()
            services.store.close()


# ---------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------


def uploading(pid: int) -> bool:
    """Whether ``pid`` is reading an output beyond its first multipart part (uploading it)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if "/delivery-worker-" not in target or not target.endswith(".parquet"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                fields = dict(line.split(":", 1) for line in info if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields["flags"], 8) & 3 == 0 and int(fields["pos"]) > DEFAULT_PART_SIZE:
            return True
    return False


def test_s3_stopped_mid_upload(inputs: Inputs, tmp_path: Path) -> None:
    moto = Moto()
    moto.start()
    try:
        with fault_stack(tmp_path, [inputs.root], moto.endpoint) as faults:
            worker = faults.start_worker()
            earlier = submit(faults.stack, [str(inputs.link("small", "s3-early")[0])],
                             selection=LIGHT)
            assert final(faults, earlier)["status"] == "Complete"
            files = inputs.link("big", "s3-out", 1)
            request_id = submit(faults.stack, [str(f) for f in files], selection=ALL)
            wait_until("an upload past its first part", lambda: uploading(worker.pid),
                       timeout=90, every=0.003)
            moto.kill()
            # Deleting needs the store: 503 while it is down, and the request stays.
            assert_503(*probe(faults, "DELETE", f"/servicex/transformation/{earlier}"),
                       "S3 store")
            assert call(faults.stack, "GET", f"/servicex/transformation/{earlier}")[0] == 200
            time.sleep(2)
            moto.start()  # empty: moto keeps objects in memory
            assert_exactly_once(faults, request_id, files)
            assert "upload failed" in faults.log(worker)
            assert worker.poll() is None
            assert call(faults.stack, "DELETE", f"/servicex/transformation/{earlier}")[0] == 200
    finally:
        moto.kill()


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


def routes(request_id: str, token: str,
           path: Path) -> list[tuple[str, str, Any, dict[str, str]]]:
    """Every kind of route that reads or writes the request store."""
    rid = f"/servicex/transformation/{request_id}"
    internal = {"Authorization": f"Bearer {token}"}
    submit_body = {"title": "t", "selection": LIGHT, "codegen": "uproot-raw",
                   "result-format": "parquet", "file-list": [str(path)]}
    report = {"request_id": request_id, "file_id": 0, "status": "failure", "error": "x"}
    return [("GET", "/servicex/transformation", None, {}), ("GET", rid, None, {}),
            ("GET", f"{rid}/results", None, {}), ("POST", f"{rid}/cancel", None, {}),
            ("DELETE", rid, None, {}), ("GET", "/servicex/datasets", None, {}),
            ("GET", f"/api/v1/requests/{request_id}/files", None, {}),
            ("GET", f"/api/v1/requests/{request_id}/files/0/download", None, {}),
            ("GET", f"/api/v1/requests/{request_id}/wait?timeout=1", None, {}),
            ("POST", "/servicex/transformation", submit_body, {}),
            ("POST", "/internal/results", report, internal),
            ("GET", f"/internal/requests/{request_id}/files/0", None, internal)]


def test_database_stopped_under_the_api(postgres: PrivatePostgres, inputs: Inputs,
                                        tmp_path: Path, s3_endpoint: str) -> None:
    with fault_stack(tmp_path, [inputs.root], s3_endpoint,
                     database_url=postgres.url) as faults:
        pause = Pause(tmp_path / "pause", "before-report")
        worker = faults.start_worker(pause.env)
        files = inputs.link("small", "pg", 3)
        request_id = submit(faults.stack, [str(f) for f in files], selection=LIGHT)
        pause.wait()
        postgres.stop()
        token = faults.stack.env["DELIVERY_SERVICE_TOKEN"]
        for method, path, body, headers in routes(request_id, token, files[0]):
            code, raw = probe(faults, method, path, body, headers)
            assert code != 500, (method, path, raw[:300])
            assert_503(code, raw, "request store unavailable")
        pause.resume()  # its report fails now: the worker holds the file and waits
        wait_until("the worker to wait out the outage",
                   lambda: "report failed" in faults.log(worker), timeout=30)
        time.sleep(1)
        postgres.start()
        assert_exactly_once(faults, request_id, files)
        assert worker.poll() is None
        assert "putting it back" not in faults.log(worker)  # no delivery was spent on it

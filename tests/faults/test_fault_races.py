"""Races on the real stack: one file uploaded twice at once, cancels against
completions, one report sent many times at once, and the client's side of it.

The client's truncated downloads are in ``tests/test_client.py``
(``test_a_truncated_transfer_is_retried``: a cut transfer is fetched again;
``test_download_with_a_wrong_size_is_retried_then_refused``: size and SHA-256
are verified before a file becomes visible).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
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
    forget,
    submit,
    wait_until,
)

from delivery import Client
from delivery.messages import FileTask

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def faults(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory,
           s3_endpoint: str) -> Iterator[Faults]:
    with fault_stack(tmp_path_factory.mktemp("races"), [inputs.root], s3_endpoint) as f:
        yield f


@pytest.fixture
def workers(faults: Faults) -> Iterator[None]:
    yield
    faults.stop_all()  # each test starts the workers it needs


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_two_workers_upload_one_file_at_once(faults: Faults, workers: None, inputs: Inputs,
                                             tmp_path: Path, fmt: str) -> None:
    pause = Pause(tmp_path / "pause", "before-upload")
    faults.start_workers(2, pause.env)
    files = inputs.link("big", f"twice-{fmt}", 1)
    request_id = submit(faults.stack, [str(files[0])], selection=ALL, fmt=fmt)
    pause.wait(workers=1)
    # The same task once more, as a redelivery racing the first run brings it.
    row = faults.stack.services.store.get(request_id)
    faults.stack.services.broker.publish([FileTask(request_id, 0, (str(files[0]),),
                                                   row.selection, fmt)])
    paused = pause.wait(workers=2)
    assert sorted(entries for entries in paused.values()) == [[(request_id, 0)]] * 2
    pause.resume()  # both upload the same object now
    wait_until("both uploads recorded", lambda: sum(
        f"file 0 of {request_id} recorded: success" in faults.log(w) for w in faults.procs) == 2,
        timeout=60)
    # One complete object, whose size and checksum are the recorded ones.
    assert_exactly_once(faults, request_id, files)
    assert faults.stack.services.broker.depth() == 0
    forget(faults, request_id)


def test_cancel_twice_and_a_completion_after_the_cancel(
        faults: Faults, workers: None, inputs: Inputs, tmp_path: Path) -> None:
    pause = Pause(tmp_path / "pause", "before-report")
    worker = faults.start_worker(pause.env)
    files = inputs.link("small", "cancel", 4)
    request_id = submit(faults.stack, [str(f) for f in files], selection=LIGHT)
    ((_, [(paused, file_id)]),) = pause.wait().items()
    assert paused == request_id
    path = f"/servicex/transformation/{request_id}"
    for _ in range(2):
        code, answer = call(faults.stack, "POST", f"{path}/cancel")
        assert code == 200, answer
    canceled = call(faults.stack, "GET", path)[1]
    assert canceled["status"] == "Canceled" and canceled["files-completed"] == 0
    pause.resume()  # the paused worker's completion arrives after the cancel
    wait_until("the late completion", lambda: f"file {file_id} of {request_id} recorded: "
               "success" in faults.log(worker), timeout=30)
    wait_until("the queue to drain", lambda: faults.stack.services.broker.depth() == 0)
    after = call(faults.stack, "GET", path)[1]
    assert after["status"] == "Canceled" and after["finish-time"] == canceled["finish-time"]
    assert after["files-completed"] == 1  # counted, but it did not complete the request
    # The other files were dropped unworked once their turn came.
    wait_until("the rest skipped", lambda: faults.log(worker).count(
        f"of {request_id}: request final or file done") == 3, timeout=30)
    assert call(faults.stack, "POST", f"{path}/cancel")[0] == 200  # still idempotent
    forget(faults, request_id)


def test_cancel_of_a_finished_request_is_409(faults: Faults, workers: None,
                                             inputs: Inputs) -> None:
    faults.start_worker()
    request_id = submit(faults.stack, [str(inputs.link("small", "done")[0])], selection=LIGHT)
    assert final(faults, request_id)["status"] == "Complete"
    code, answer = call(faults.stack, "POST", f"/servicex/transformation/{request_id}/cancel")
    assert code == 409 and "already Complete" in answer["message"], answer
    assert call(faults.stack, "GET", f"/servicex/transformation/{request_id}")[1]["status"] == \
        "Complete"
    forget(faults, request_id)


def test_one_report_sent_many_times_at_once_counts_once(faults: Faults, workers: None,
                                                        inputs: Inputs) -> None:
    faults.start_worker()
    request_id = submit(faults.stack, [str(inputs.link("small", "dup")[0])], selection=LIGHT)
    assert final(faults, request_id)["status"] == "Complete"
    store = faults.stack.services.store
    (row,) = store.results(request_id)
    report = {"request_id": request_id, "file_id": row.file_id, "status": row.status,
              "object_name": row.object_name, "total_bytes": row.total_bytes,
              "sha256": row.sha256, "events_in": row.events_in, "events_out": row.events_out,
              "seconds": row.seconds, "error": row.error}
    headers = {"Authorization": f"Bearer {faults.stack.env['DELIVERY_SERVICE_TOKEN']}"}

    def post_all(body: dict[str, Any], n: int = 8) -> list[bool]:
        barrier = threading.Barrier(n)

        def one(_: int) -> bool:
            barrier.wait()
            code, answer = call(faults.stack, "POST", "/internal/results", body, headers=headers)
            assert code == 200, answer
            return bool(answer["recorded"])

        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))

    def check(seconds: float) -> None:
        status = call(faults.stack, "GET", f"/servicex/transformation/{request_id}")[1]
        assert (status["status"], status["files"], status["files-completed"],
                status["files-failed"], status["files-remaining"]) == ("Complete", 1, 1, 0, 0)
        (again,) = store.results(request_id)
        assert (again.id, again.status, again.object_name, again.total_bytes, again.created_at,
                again.seconds) == (row.id, "success", row.object_name, row.total_bytes,
                                   row.created_at, seconds)
        later: datetime = row.created_at
        answer = call(faults.stack, "GET", f"/servicex/transformation/{request_id}/results"
                                           f"?later_than={later.isoformat()}")[1]
        assert answer["results"] == []  # a poller sees no "new" result

    assert post_all(report) == [False] * 8  # the worker's very report: nothing changes
    check(row.seconds)
    rerun = {**report, "seconds": row.seconds + 1.5}  # a redelivered run's own timing
    assert sorted(post_all(rerun)) == [False] * 7 + [True]
    check(row.seconds + 1.5)
    failure = {**report, "status": "failure", "object_name": None, "total_bytes": 0,
               "error": "worker lost"}  # a late failure never overrides the success
    assert post_all(failure) == [False] * 8
    check(row.seconds + 1.5)
    forget(faults, request_id)


def test_the_client_takes_a_file_reported_twice_once() -> None:
    """The same file in two long polls and the final listing: yielded (downloaded) once."""
    item = {"file-id": 0, "s3-object-name": "a.parquet", "total-bytes": 3,
            "transform_status": "success", "created_at": "2026-01-01T00:00:01"}
    twice = {**item, "created_at": "2026-01-01T00:00:02", "transform_time": 9.0}
    polls = iter([("Running", [item]), ("Running", [twice])])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            done = {"status": "Complete", "files": 1, "files-completed": 1,
                    "files-failed": 0, "failure-info": None}
            if "/wait" in self.path:
                state, results = next(polls, ("Complete", [twice]))
                body: Any = {"status": {**done, "status": state}, "results": results}
            else:
                body = {"results": [item, twice]}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{server.server_port}") as client:
            seen = list(client.follow("rid", deadline=20))
    finally:
        server.shutdown()
        server.server_close()
    assert [i["file-id"] for i in seen] == [0]


def test_internal_endpoints_need_the_service_token(faults: Faults) -> None:
    body = {"request_id": "x", "file_id": 0, "status": "success"}
    assert call(faults.stack, "POST", "/internal/results", body)[0] == 401
    code, _ = call(faults.stack, "POST", "/internal/results", body,
                   headers={"Authorization": "Bearer wrong"})
    assert code == 403
    token = {"Authorization": f"Bearer {faults.stack.env['DELIVERY_SERVICE_TOKEN']}"}
    code, answer = call(faults.stack, "POST", "/internal/results", {**body, "file_id": "zero"},
                        headers=token)
    assert code == 400 and "file_id must be an integer" in answer["message"]
    request_id = submit(faults.stack, [], did="rucio://nowhere")  # a request with no files
    code, answer = call(faults.stack, "POST", "/internal/results",
                        {**body, "request_id": request_id, "file_id": 7, "status": "failure",
                         "error": "x"}, headers=token)
    assert code == 404 and "has no file 7" in answer["message"]

"""The per-file limits on the real stack: a stalled input and a decompression bomb.

Both workers of this module run with ``DELIVERY_FILE_TIMEOUT=2`` and
``DELIVERY_WORKER_MEMORY=512M``: each file's transform runs in a child process
that is killed past either limit (``transformers/isolate.py``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faultkit import (
    LIGHT,
    Faults,
    Inputs,
    assert_exactly_once,
    call,
    children,
    fault_stack,
    final,
    forget,
    submit,
)

pytestmark = pytest.mark.integration
TIMEOUT = 2
LIMITS = {"DELIVERY_FILE_TIMEOUT": str(TIMEOUT), "DELIVERY_WORKER_MEMORY": "512M"}


@pytest.fixture(scope="module")
def faults(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory,
           s3_endpoint: str) -> Iterator[Faults]:
    with fault_stack(tmp_path_factory.mktemp("limits"), [inputs.root], s3_endpoint) as f:
        for _ in range(2):
            f.start_worker(LIMITS)
        yield f
        workers = f.live()
        assert len(workers) == 2, f.logs_text()  # no limit ever took a worker down
        left = {w.pid: [_cmdline(c) for c in children(w.pid)] for w in workers}
        assert all(not c for c in left.values()), left  # and no transform is left behind


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """``http://127.0.0.1:PORT``: accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])  # held open, silent

    thread = threading.Thread(target=serve, name="silent-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_stalled_input_is_killed_retried_then_failed(faults: Faults, inputs: Inputs) -> None:
    good = inputs.link("small", "stall-good", 1)
    limit = faults.stack.services.broker.delivery_limit
    with silent_server() as (base, accepted):
        started = time.monotonic()
        request_id = submit(faults.stack, [f"{base}/stalled.root", str(good[0])],
                            selection=LIGHT)
        status = final(faults, request_id, timeout=120)
        took = time.monotonic() - started
        connections = len(accepted)
    assert (status["status"], status["files"], status["files-completed"],
            status["files-failed"], status["files-remaining"]) == ("Complete", 2, 1, 1, 0)
    code, answer = call(faults.stack, "GET", f"/api/v1/requests/{request_id}/files")
    by_id = {r["file-id"]: r for r in answer["files"]}
    assert by_id[1]["transform_status"] == "success"
    error = by_id[0]["error"]
    assert by_id[0]["transform_status"] == "failure", by_id[0]
    assert f"gave up after {limit + 1} deliveries" in error, error
    assert f"took longer than {TIMEOUT} s (DELIVERY_FILE_TIMEOUT)" in error, error
    # Each delivery connected and was cut off at the limit, none hung on.
    assert connections >= limit + 1
    assert took >= (limit + 1) * TIMEOUT, took
    forget(faults, request_id)


def write_bomb(path: Path, entries: int = 100_000_000) -> None:
    """One basket of ``entries`` zero doubles: 800 MB inflated from a ~1 MB file."""
    import uproot

    with uproot.recreate(path, compression=uproot.ZSTD(1)) as f:
        f["Events"] = {"x": np.zeros(entries)}


def test_a_decompression_bomb_fails_its_file_and_nothing_else(
        faults: Faults, inputs: Inputs) -> None:
    bomb = inputs.root / "bomb-0.root"
    write_bomb(bomb)
    assert bomb.stat().st_size < 20_000_000
    others = inputs.link("small", "beside-bomb", 3)
    bombed = submit(faults.stack, [str(bomb)], selection='[{"treename": "Events"}]')
    fine = submit(faults.stack, [str(f) for f in others], selection=LIGHT)
    status = final(faults, bombed)
    assert (status["status"], status["files-completed"], status["files-failed"]) == \
        ("Complete", 0, 1)
    code, answer = call(faults.stack, "GET", f"/api/v1/requests/{bombed}/files?status=failure")
    (failed,) = answer["files"]
    assert "needs more than 512 MiB of memory" in failed["error"], failed
    assert "DELIVERY_WORKER_MEMORY" in failed["error"]
    # Permanent: failed on its first delivery, never put back.
    logs = [line for w in faults.procs for line in faults.log(w).splitlines()
            if f"of {bombed}" in line]
    assert len(logs) == 1 and "recorded: failure" in logs[0], logs
    assert_exactly_once(faults, fine, others)
    forget(faults, bombed)
    forget(faults, fine)

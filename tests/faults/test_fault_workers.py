"""Workers killed, stopped and crashed mid-file, on the real stack.

One steady ``delivery worker`` runs for the whole module; each test adds a
victim. The victim is stopped in an exact window by the pause hook (see
``faultkit.Pause``), or caught while its transform process exists, then
SIGKILLed or SIGTERMed. The steady worker also has ``DELIVERY_TEST_CRASH_ON``,
so its transform process segfaults on every input named ``poison-*``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import (
    ALL,
    LIGHT,
    Faults,
    Inputs,
    Pause,
    Worker,
    assert_exactly_once,
    call,
    children,
    fault_stack,
    final,
    forget,
    submit,
    wait_until,
)
from servers import free_port
from stack import embedded_stack
from test_service import wait_final

pytestmark = pytest.mark.integration
CRASH = {"DELIVERY_TEST_CRASH_ON": "poison-"}


@pytest.fixture(scope="module")
def faults(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory,
           s3_endpoint: str) -> Iterator[Faults]:
    with fault_stack(tmp_path_factory.mktemp("workers"), [inputs.root], s3_endpoint) as f:
        f.start_worker(CRASH)
        yield f


@pytest.fixture
def steady(faults: Faults) -> Iterator[Worker]:
    (proc,) = faults.live()  # the previous test's victim is gone
    yield proc
    assert proc.poll() is None, faults.logs_text()  # it rode out every fault
    for extra in faults.live():
        if extra is not proc:
            faults.stop(extra)


def _transform_child(victim_pid: int) -> int | None:
    found = children(victim_pid)
    return found[0] if found else None


@pytest.mark.parametrize("window", ["mid-transform", "before-upload", "before-report",
                                    "before-ack"])
def test_sigkill_in_each_window_loses_and_duplicates_nothing(
        faults: Faults, steady: Worker, inputs: Inputs, tmp_path: Path, window: str) -> None:
    if window == "mid-transform":
        # Two big files first: with prefetch 1, the two workers take one each.
        files = inputs.link("big", f"kill-{window}", 2) + inputs.link("small", "kill-mt", 2)
        victim = faults.start_worker()
    else:
        files = inputs.link("small", f"kill-{window}", 4)
        pause = Pause(tmp_path / "pause", window)
        victim = faults.start_worker(pause.env)
    request_id = submit(faults.stack, [str(f) for f in files], selection=ALL)
    if window == "mid-transform":
        child = wait_until("the victim's transform process",
                           lambda: _transform_child(victim.pid), timeout=60, every=0.005)
    else:
        ((pid, [(paused_request, paused_file)]),) = pause.wait().items()
        assert (pid, paused_request) == (victim.pid, request_id)
    victim.kill()
    assert victim.wait(timeout=10) == -signal.SIGKILL
    if window == "mid-transform":  # the transform process died with its worker
        wait_until("the orphaned transform to die", lambda: not os.path.exists(f"/proc/{child}"),
                   timeout=10)
    assert_exactly_once(faults, request_id, files)
    if window == "before-ack":  # recorded by the victim: the redelivery was skipped, not redone
        assert f"skipping file {paused_file} of {request_id}" in faults.log(steady)
    forget(faults, request_id)


def test_sigkill_of_an_embedded_worker_loses_and_duplicates_nothing(
        inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pause = Pause(tmp_path / "pause", "before-upload")
    monkeypatch.setenv(*pause.env.popitem())  # the pool's children inherit it
    files = inputs.link("small", "kill-embedded", 4)
    with embedded_stack(tmp_path / "stack", [inputs.root], workers=2) as stack:
        request_id = submit(stack, [str(f) for f in files], selection=ALL)
        victim = min(pause.wait(workers=2))  # each child of the pool holds one file
        os.kill(victim, signal.SIGKILL)
        wait_until("the pool to replace its child", lambda: victim not in stack.worker_pids()
                   and len(stack.worker_pids()) == 2, timeout=60)
        pause.resume()
        assert_exactly_once(stack, request_id, files)


def test_sigterm_while_paused_finishes_the_file_then_exits(
        faults: Faults, steady: Worker, inputs: Inputs, tmp_path: Path) -> None:
    files = inputs.link("small", "term-paused", 3)
    pause = Pause(tmp_path / "pause", "before-upload")
    victim = faults.start_worker(pause.env)
    request_id = submit(faults.stack, [str(f) for f in files], selection=LIGHT)
    ((_, [(_, file_id)]),) = pause.wait().items()
    victim.send_signal(signal.SIGTERM)
    with pytest.raises(Exception, match="timed out"):  # still finishing its file
        wait_until("the victim to exit", lambda: victim.poll() is not None, timeout=1)
    pause.resume()
    assert victim.wait(timeout=30) == 0, faults.log(victim)
    # It uploaded, recorded and acked its file before leaving; nothing ran twice.
    assert f"file {file_id} of {request_id} recorded: success" in faults.log(victim)
    assert f"file {file_id} of {request_id}" not in faults.log(steady)
    assert_exactly_once(faults, request_id, files)
    forget(faults, request_id)


def test_sigterm_to_worker_and_transform_mid_file_finishes_the_file(
        faults: Faults, steady: Worker, inputs: Inputs) -> None:
    """As a supervisor stopping a whole control group does: both get SIGTERM."""
    files = inputs.link("big", "term-group", 2)
    victim = faults.start_worker()
    request_id = submit(faults.stack, [str(f) for f in files], selection=ALL)
    child = wait_until("the victim's transform process", lambda: _transform_child(victim.pid),
                       timeout=60, every=0.005)
    os.kill(victim.pid, signal.SIGTERM)
    os.kill(child, signal.SIGTERM)
    assert victim.wait(timeout=60) == 0, faults.log(victim)
    log = faults.log(victim)
    assert "recorded: success" in log and "putting it back" not in log, log
    assert_exactly_once(faults, request_id, files)
    forget(faults, request_id)


def test_sigterm_while_waiting_out_an_outage_puts_the_file_back(
        faults: Faults, steady: Worker, inputs: Inputs) -> None:
    files = inputs.link("small", "term-back", 3)
    victim = faults.start_worker({"DELIVERY_S3_ENDPOINT": f"127.0.0.1:{free_port()}"})
    request_id = submit(faults.stack, [str(f) for f in files], selection=LIGHT)
    wait_until("the victim to wait for its (dead) store",
               lambda: "upload failed" in faults.log(victim), timeout=60)
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=30) == 0, faults.log(victim)
    log = faults.log(victim)
    assert "putting it back" in log and "recorded" not in log, log  # never acked unfinished
    assert_exactly_once(faults, request_id, files)  # the steady worker did it after all
    forget(faults, request_id)


def _assert_poisoned(status: dict[str, object], failed: dict[str, object], poison: Path,
                     limit: int) -> None:
    assert (status["status"], status["files"], status["files-completed"],
            status["files-failed"], status["files-remaining"]) == ("Complete", 3, 2, 1, 0)
    assert failed["file-path"] == str(poison) and failed["s3-object-name"] is None
    error = str(failed["error"])
    assert f"gave up after {limit + 1} deliveries" in error, error
    assert "dead-letter queue" in error and "SIGSEGV" in error, error


def test_poison_file_is_dead_lettered_with_its_reason(
        faults: Faults, steady: Worker, inputs: Inputs,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="delivery.serve")
    (poison,) = inputs.link("small", "poison-real")
    good = inputs.link("small", "good-real", 2)
    request_id = submit(faults.stack, [str(poison)] + [str(f) for f in good], selection=LIGHT)
    status = final(faults, request_id)
    code, answer = call(faults.stack, "GET",
                        f"/api/v1/requests/{request_id}/files?status=failure")
    assert code == 200
    limit = faults.stack.services.broker.delivery_limit
    _assert_poisoned(status, answer["files"][0], poison, limit)
    # Every delivery crashed the transform process, never the worker; the last went
    # to the dead-letter queue, whose watcher kept the worker's reason.
    log = faults.log(steady)
    assert log.count("killed by SIGSEGV, Segmentation fault; putting it back") == limit, log
    assert f"file 0 of {request_id} recorded: failure" in log, log
    wait_until("the dead letter", lambda: f"dead letter: file 0 of {request_id}" in caplog.text,
               timeout=30)
    assert faults.stack.services.broker.dead_depth() == 0
    forget(faults, request_id)


def test_poison_file_on_the_embedded_default(inputs: Inputs, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_TEST_CRASH_ON", "poison-")  # the pool's children inherit it
    (poison,) = inputs.link("small", "poison-embedded")
    good = inputs.link("small", "good-embedded", 2)
    with embedded_stack(tmp_path, [inputs.root], workers=2) as stack:
        request_id = submit(stack, [str(poison)] + [str(f) for f in good], selection=LIGHT)
        status = wait_final(stack, request_id, timeout=90)
        code, answer = call(stack, "GET", f"/api/v1/requests/{request_id}/files?status=failure")
        _assert_poisoned(status, answer["files"][0], poison, stack.services.broker.delivery_limit)
        assert stack.services.broker.dead_depth() == 0


def test_a_store_error_while_recording_loses_nothing_on_the_embedded_default(
        inputs: Inputs, tmp_path: Path) -> None:
    from delivery.errors import TransientError
    from delivery.messages import FileReport

    files = inputs.link("small", "store-once", 4)
    with embedded_stack(tmp_path / "stack", [inputs.root], workers=1) as stack:
        store, calls = stack.services.store, []
        record = store.record

        def fails_once(report: FileReport) -> bool:  # SQLite busy or disk trouble, once
            calls.append(report.file_id)
            if len(calls) == 1:
                raise TransientError("request store unavailable (injected once)")
            return bool(record(report))

        store.record = fails_once
        request_id = submit(stack, [str(f) for f in files], selection=LIGHT)
        status = wait_final(stack, request_id, timeout=20)
        assert status["files-completed"] == len(files), status
        assert_exactly_once(stack, request_id, files)

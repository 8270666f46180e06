"""Load on the real stack, scaled down for CI: 10 concurrent clients x 5-file requests.

RabbitMQ, moto S3, PostgreSQL and 2 ``delivery worker`` subprocesses; once half
of the outputs exist, a worker caught mid-file is SIGKILLed and a new one started.
Every request must end Complete with exactly one output per input (5 success rows,
5 stored objects of the recorded sizes, nothing failed). The API's p95 latency is
printed, not asserted: this machine is shared. The full run (50 clients, a soak)
is ``bench/bench_load.py``, whose machinery this test uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from stack import real_stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_load import make_inputs, run_load, start_worker  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 10
EVENTS = 2000  # per file: small, so 50 transforms fit the CI budget on 2 cores


def test_concurrent_clients_and_a_killed_worker_lose_and_duplicate_nothing(
        tmp_path: Path, s3_endpoint: str) -> None:
    data = tmp_path / "inputs"
    files = make_inputs(data, EVENTS)
    with real_stack(tmp_path / "stack", [data], s3_endpoint, workers=0) as stack:
        for _ in range(2):
            start_worker(stack, tmp_path)
        report = run_load(stack, files, tmp_path, CLIENTS)
        for request_id in report_requests(stack):
            stack.services.objects.delete_bucket(request_id)  # the shared moto keeps them
    print(f"\nload: {report['requests']} requests, {report['outputs']} outputs in "
          f"{report['seconds']} s; API p50 {report['api_p50_ms']} ms, p95 "
          f"{report['api_p95_ms']} ms over {report['api_calls']} calls; SIGKILL at "
          f"{report['killed_at_s']} s (mid-file: {report['killed_mid_file']})")
    assert report["problems"] == []
    assert report["requests"] == CLIENTS
    assert report["outputs"] == report["expected_outputs"] == CLIENTS * len(files)
    assert len(report["killed"]) == 1
    assert report["exactly_once"]


def report_requests(stack: object) -> list[str]:
    return [row.request_id for row in stack.services.store.list_requests()]  # type: ignore[attr-defined]

"""``/metrics``: parses with the Prometheus text parser, counters move by exactly the right amounts."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from stack import Stack, stack_for

from delivery.messages import FAILURE, SUCCESS, FileReport
from transformers.generate import generate

SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_pt", "Muon_pt"],
                         "cut": "MET_pt > 15"}])
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    req = urllib.request.Request(url + "/metrics", headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics-inputs")
    for i in range(2):
        generate(root / f"nano{i}.root", 4000 + 1000 * i, seed=i, basket_entries=1000)
    (root / "corrupt.root").write_bytes(b"not a ROOT file at all " * 100)
    return root


@pytest.fixture(scope="module", params=["embedded", "real"])
def stack(request: pytest.FixtureRequest, data_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_for(request, tmp_path_factory.mktemp(f"metrics-{request.param}"),
                   [data_dir]) as s:
        yield s


def submit(stack: Stack, files: list[str]) -> str:
    body = {"title": "metrics", "file-list": files, "result-format": "parquet",
            "selection": SELECTION, "reuse": False}
    req = urllib.request.Request(stack.url + "/servicex/transformation", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as response:
        return str(json.loads(response.read())["request_id"])


def wait_final(stack: Stack, request_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{stack.url}/servicex/transformation/{request_id}",
                                    timeout=30) as response:
            status: dict[str, Any] = json.loads(response.read())
        if status["status"] in ("Complete", "Fatal", "Canceled", "Bad Dataset"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"{request_id} not final after {timeout} s")


def test_counters_move_by_exactly_the_request(stack: Stack, data_dir: Path) -> None:
    before = scrape(stack.url)
    files = [str(data_dir / "nano0.root"), str(data_dir / "corrupt.root"),
             str(data_dir / "nano1.root")]
    rid = submit(stack, files)
    status = wait_final(stack, rid)
    assert (status["files-completed"], status["files-failed"]) == (2, 1)
    after = scrape(stack.url)
    ok = stack.services.store.results(rid, status=SUCCESS)

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    assert delta("delivery_files_processed_total") == 2
    assert delta("delivery_files_failed_total") == 1
    assert delta("delivery_events_delivered_total") == sum(r.events_out for r in ok)
    assert delta("delivery_events_read_total") == sum(r.events_in for r in ok) == 9000
    assert delta("delivery_bytes_delivered_total") == sum(r.total_bytes for r in ok)
    assert delta("delivery_file_transform_seconds_count") == 2
    assert delta("delivery_file_transform_seconds_sum") == pytest.approx(
        sum(r.seconds for r in ok))
    assert value(after, "delivery_file_transform_seconds_bucket", le="+Inf") == \
        value(after, "delivery_file_transform_seconds_count")
    assert value(after, "delivery_requests", status="Complete") >= 1
    assert value(after, "delivery_queue_depth") == 0
    assert value(after, "delivery_dead_letter_depth") == 0


def test_worker_heartbeats(stack: Stack) -> None:
    deadline = time.monotonic() + 30  # real workers beat on start; allow a loaded machine
    while True:
        samples = scrape(stack.url)
        if value(samples, "delivery_workers_live") == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert value(samples, "delivery_workers_live") == 2
    seen = {labels: v for (name, labels), v in samples.items()
            if name == "delivery_worker_last_seen_timestamp_seconds"}
    assert len(seen) == 2
    assert all(time.time() - v < 30 for v in seen.values())


def test_a_repeated_report_counts_nothing(stack: Stack, data_dir: Path) -> None:
    from api.operations import record_result

    rid = submit(stack, [str(data_dir / "nano0.root"), str(data_dir / "corrupt.root")])
    wait_final(stack, rid)
    before = scrape(stack.url)
    svc = stack.services
    done = {r.file_id: r for r in svc.store.results(rid)}
    success = next(r for r in done.values() if r.status == SUCCESS)
    report = FileReport(rid, success.file_id, SUCCESS, object_name=success.object_name,
                        total_bytes=success.total_bytes, sha256=success.sha256,
                        events_in=success.events_in, events_out=success.events_out,
                        seconds=success.seconds)
    assert record_result(svc, report) is False  # a redelivery: identical, nothing changes
    # a success replacing a success (a worker crash between report and ack) changes the
    # row but is the same file: still not counted again
    assert record_result(svc, FileReport(**{**report.to_json(), "seconds": 9.5})) is True
    failed = next(r for r in done.values() if r.status == FAILURE)
    assert record_result(svc, FileReport(rid, failed.file_id, FAILURE,
                                         error="again, other words")) is True
    after = scrape(stack.url)
    for name in ("delivery_files_processed_total", "delivery_files_failed_total",
                 "delivery_events_delivered_total", "delivery_bytes_delivered_total",
                 "delivery_file_transform_seconds_count"):
        assert value(after, name) == value(before, name), name


def test_metrics_need_an_admin_or_the_service_token_with_auth(tmp_path: Path) -> None:
    from stack import AUTH_ENV

    from api.app import create_app
    from api.serve import build_services
    from delivery.config import Settings

    service = secrets.token_urlsafe(24)
    settings = Settings.from_env({"DELIVERY_STATE_DIR": str(tmp_path), **AUTH_ENV,
                                  "DELIVERY_SERVICE_TOKEN": service})
    services = build_services(settings)
    services.store.create_user("alice")
    services.store.create_user("root", admin=True)
    client = create_app(services).test_client()

    def bearer(name: str) -> dict[str, str]:
        token = services.store.issue_token(name)
        access = client.post("/token/refresh", headers={"Authorization": f"Bearer {token}"})
        return {"Authorization": f"Bearer {access.get_json()['access_token']}"}

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("alice")).status_code == 403
    assert client.get("/metrics", headers=bearer("root")).status_code == 200
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {service}"})
    assert answer.status_code == 200
    assert "delivery_files_processed_total 0.0" in answer.get_data(as_text=True)
    # The dashboard's cookie works too (an admin's Metrics link), for admins only.
    from api.auth import ACCESS_COOKIE

    for name, code in (("alice", 403), ("root", 200)):
        client.set_cookie(ACCESS_COOKIE, bearer(name)["Authorization"][7:])
        assert client.get("/metrics").status_code == code
    client.set_cookie(ACCESS_COOKIE, "forged")
    assert client.get("/metrics").status_code == 401
    services.broker.close()


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    from api.app import create_app
    from api.serve import build_services
    from delivery.config import Settings

    one, two = (build_services(Settings.from_env({"DELIVERY_STATE_DIR": str(tmp_path / n)}))
                for n in ("a", "b"))
    one.ops.metrics.processed.inc(3)
    text = create_app(two).test_client().get("/metrics").get_data(as_text=True)
    assert "delivery_files_processed_total 0.0" in text
    text = create_app(one).test_client().get("/metrics").get_data(as_text=True)
    assert "delivery_files_processed_total 3.0" in text

"""Workers check input paths again: a task that never went through the API is still confined."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delivery.broker.base import Verdict
from delivery.messages import FAILURE, FileReport, FileTask
from delivery.objects.local import LocalStore
from delivery.policy import SourcePolicy
from transformers.generate import generate
from transformers.worker import Worker

SELECTION = json.dumps([{"treename": "Events", "filter_name": ["nMuon"]}])


class Recorder:
    def __init__(self) -> None:
        self.reports: list[FileReport] = []

    def record(self, report: FileReport) -> None:
        self.reports.append(report)

    def pending(self, request_id: str, file_id: int) -> bool:
        return True


@pytest.mark.parametrize("url, words", [
    ("/etc/passwd", "outside the allowed roots"),
    ("file:///etc/passwd", "outside the allowed roots"),
    ("@ROOT/../../etc/passwd", "outside the allowed roots"),
    ("memory://x.root", "not allowed"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("@ROOT/ok.root::memory://y", "chained URLs"),
])
def test_worker_refuses_what_the_api_would(tmp_path: Path, url: str, words: str) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    generate(root / "ok.root", 500, seed=1, basket_entries=500)
    recorder = Recorder()
    worker = Worker(LocalStore(tmp_path / "results"), recorder, SourcePolicy.create([root]),
                    scratch=tmp_path / "scratch")
    task = FileTask("req-1", 0, (url.replace("@ROOT", str(root)),), SELECTION, "parquet")
    assert worker.handle(task, 1) is Verdict.ACK
    (report,) = recorder.reports
    assert report.status == FAILURE and words in (report.error or ""), report
    assert not list((tmp_path / "results").rglob("*.parquet"))

"""The `delivery` command line: transform, generate and demo, as a physicist runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import awkward as ak
import pytest
import uproot

from delivery.cli import main

SELECTION = json.dumps([{"treename": "Events", "filter_name": ["nMuon", "Muon_pt", "MET_pt"],
                         "cut": "count(Muon_pt > 20) >= 1"}])


@pytest.fixture(scope="module")
def nano(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "nano.root"
    assert main(["generate", str(path), "--events", "20000", "--basket-entries", "5000"]) == 0
    return path


def test_generate_writes_what_it_says(nano: Path) -> None:
    tree = uproot.open(nano)["Events"]
    assert tree.num_entries == 20000
    assert tree["Muon_pt"].num_baskets == 4


def test_transform_prints_per_file_numbers(nano: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["transform", str(nano), "--selection", SELECTION,
                 "--output", str(tmp_path), "--json"])
    assert code == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["events_in"] == 20000 and 0 < row["events_out"] < 20000
    direct = uproot.open(nano)["Events"].arrays(["Muon_pt"])
    assert row["events_out"] == int(ak.sum(ak.sum(direct.Muon_pt > 20, axis=1) >= 1))
    out = ak.from_parquet(row["output"])
    assert out.fields == ["nMuon", "Muon_pt", "MET_pt"] and len(out) == row["events_out"]
    assert row["bytes"] == Path(row["output"]).stat().st_size


def test_transform_selection_from_file_and_table(nano: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sel = tmp_path / "sel.json"
    sel.write_text(SELECTION)
    assert main(["transform", str(nano), "--selection", f"@{sel}", "--format", "arrow",
                 "--output", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "events in" in text and "20,000" in text and "ok" in text


@pytest.mark.parametrize("selection, reason", [
    ('[{"treename": "Events", "cut": "__import__(1)"}]', "selection[0].cut"),
    ('[{"treename": "Nope"}]', "no TTree or RNTuple 'Nope'; it has: Events"),
    ('[{"treename": "Events", "filter_name": ["Muon_PT"]}]', "close matches: Muon_pt"),
    ("@/no/such/selection.json", "cannot read selection file"),
])
def test_failures_are_one_line_and_nonzero(nano: Path, tmp_path: Path, selection: str,
                                           reason: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "delivery", "transform", str(nano), "--selection", selection,
         "--output", str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and reason in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.parquet"))


def test_corrupt_file_fails_its_row_only(nano: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.root"
    bad.write_bytes(b"not a root file at all" * 100)
    code = main(["transform", str(nano), str(bad), "--selection", SELECTION,
                 "--output", str(tmp_path / "o"), "--json"])
    assert code == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["error"] is None and "not a ROOT file" in rows[1]["error"]


def test_demo_runs_the_service_end_to_end(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--events", "6000", "--files", "2", "--workers", "1",
                 "--workdir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "request Complete: 2 of 2 files (0 failed)" in text
    assert "check: every event delivered passes the cut: yes" in text
    # The number the demo prints is the number uproot finds, computed here independently.
    passing = 0
    for path in sorted((tmp_path / "inputs").glob("*.root")):
        source = uproot.open(path)["Events"].arrays(["Muon_pt", "MET_pt"])
        passing += int(ak.sum((ak.sum(source.Muon_pt > 20, axis=1) >= 2) & (source.MET_pt < 200)))
    assert 0 < passing < 12000
    assert f"{passing:,} of 12,000 events pass the cut" in text

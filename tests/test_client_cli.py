"""The client subcommands of ``delivery`` against a real embedded service."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack import REPO, Stack, embedded_stack

from delivery import Client
from delivery.cli import main
from transformers.generate import generate

pytestmark = pytest.mark.integration

QUERY = ["--tree", "Events", "--columns", "MET_pt", "Muon_pt", "--cut", "count(Muon_pt > 20) >= 1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-inputs")
    for i in range(2):
        generate(root / f"nano{i}.root", 2000, seed=30 + i, basket_entries=1000)
    generate(root / "big.root", 20000, seed=40, basket_entries=5000)
    return root


@pytest.fixture(scope="module")
def stack(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("cli-stack"), [data_dir]) as s:
        yield s


def run(capsys: pytest.CaptureFixture[str], stack: Stack, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--url", stack.url])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], stack: Stack, *argv: str) -> Any:
    code, out, err = run(capsys, stack, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finished(stack: Stack, data_dir: Path) -> str:
    """A request over two files, submitted and followed to Complete via the CLI."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["submit", "--url", stack.url, "--json", "--title", "finished",
                     "--files", str(data_dir / "nano0.root"), str(data_dir / "nano1.root"),
                     *QUERY])
    assert code == 0
    request_id = json.loads(out.getvalue())["request_id"]
    with Client(stack.url) as client:
        for _ in client.follow(request_id, poll=5, deadline=30):
            pass
        assert client.status(request_id)["status"] == "Complete"
    return str(request_id)


def test_submit_then_status(stack: Stack, data_dir: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    sel = json.dumps([{"treename": "Events", "filter_name": ["MET_pt"]}])
    request_id = run_json(capsys, stack, "submit", "--files", str(data_dir / "nano0.root"),
                          "--selection", sel, "--title", "plain")["request_id"]
    found = run_json(capsys, stack, "status", request_id)
    assert found["request_id"] == request_id and found["title"] == "plain"
    assert found["files"] == 1 and found["result-format"] == "parquet"
    assert found["status"] in ("Running", "Complete")
    code, out, _ = run(capsys, stack, "status", request_id)
    assert code == 0 and request_id in out and "files-completed" in out


def test_submit_refuses_a_bad_query_locally(stack: Stack, data_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, stack, "submit", "--files", str(data_dir / "nano0.root"),
                       "--tree", "Events", "--cut", "__import__('os')")
    assert code == 1
    one_line_error(err)
    code, _, err = run(capsys, stack, "submit", "--files", str(data_dir / "nano0.root"))
    assert code == 1 and "--selection" in one_line_error(err)


def test_list_results_and_download(stack: Stack, finished: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    listed = run_json(capsys, stack, "list")
    assert finished in [r["request_id"] for r in listed]
    code, out, _ = run(capsys, stack, "list")
    assert code == 0 and finished in out and out.splitlines()[0].startswith("request id")

    items = run_json(capsys, stack, "results", finished)
    assert len(items) == 2 and {i["transform_status"] for i in items} == {"success"}
    assert run_json(capsys, stack, "results", finished, "--status", "failure") == []
    code, out, _ = run(capsys, stack, "results", finished)
    assert code == 0 and len(out.strip().splitlines()) == 3

    got = run_json(capsys, stack, "download", finished, "-o", str(tmp_path / "out"))
    sizes = {i["file-id"]: i["total-bytes"] for i in items}
    assert len(got) == 2
    for d in got:
        assert Path(d["path"]).stat().st_size == sizes[d["file-id"]] > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        Path(d["path"]).name for d in got)  # no leftover .part files


def test_get_in_one_step(stack: Stack, data_dir: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, stack, "get", "--files", str(data_dir / "nano0.root"),
                         str(data_dir / "nano1.root"), "--tree", "Events",
                         "--columns", "MET_pt", "--define", "n_mu=count(Muon_pt > 20)",
                         "--cut", "n_mu >= 1", "-o", str(tmp_path), "--poll", "5",
                         "--json")
    assert code == 0, err
    got = json.loads(out)
    assert len(got["files"]) == 2
    assert err.count("[") == 2 and "[2/2]" in err  # one progress line per file
    items = run_json(capsys, stack, "results", got["request_id"])
    sizes = {i["file-id"]: i["total-bytes"] for i in items}
    for d in got["files"]:
        assert Path(d["path"]).stat().st_size == sizes[d["file-id"]]


def test_get_of_a_missing_file_fails_in_one_line(stack: Stack, data_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, stack, "get", "--files", str(data_dir / "absent.root"), *QUERY,
                       "-o", str(tmp_path))
    assert code == 1
    assert "absent.root" in one_line_error(err.strip().splitlines()[-1])


def test_cancel_of_a_finished_request_is_refused(stack: Stack, finished: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, stack, "cancel", finished)
    assert code == 1
    line = one_line_error(err)
    assert "409" in line and "Complete" in line


def test_cancel_twice_of_a_running_request(stack: Stack, data_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    many = [str(data_dir / "big.root")] * 200
    request_id = run_json(capsys, stack, "submit", "--files", *many, "--tree", "Events",
                          "--columns", "Jet_pt", "--cut", "count(Jet_pt > 33) >= 1")["request_id"]
    for _ in range(2):
        code, out, err = run(capsys, stack, "cancel", request_id)
        assert code == 0, err
        assert request_id in out
    assert run_json(capsys, stack, "status", request_id)["status"] == "Canceled"


def test_delete_twice(stack: Stack, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request_id = run_json(capsys, stack, "submit", "--files", str(data_dir / "nano1.root"),
                          *QUERY)["request_id"]
    for _ in range(2):
        code, _, err = run(capsys, stack, "delete", request_id)
        assert code == 0, err
    code, _, err = run(capsys, stack, "status", request_id)
    assert code == 1 and "404" in one_line_error(err)


def test_datasets(stack: Stack, finished: str, capsys: pytest.CaptureFixture[str]) -> None:
    found = run_json(capsys, stack, "datasets")
    assert "file-list" in [d["name"] for d in found]
    one = run_json(capsys, stack, "datasets", str(found[0]["id"]))
    assert one["id"] == found[0]["id"]
    code, out, _ = run(capsys, stack, "datasets")
    assert code == 0 and "file-list" in out
    code, _, err = run(capsys, stack, "datasets", "999999")
    assert code == 1 and "404" in one_line_error(err)


def test_a_dead_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "x", "--url", "http://127.0.0.1:1"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "cannot connect" in line
    assert main(["list", "--url", "not-a-url"]) == 1
    one_line_error(capsys.readouterr().err)


def test_a_dead_url_in_a_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DELIVERY_URL": "http://127.0.0.1:1"}
    env.pop("DELIVERY_DEBUG", None)
    for argv in (["status", "x", "--url", "http://127.0.0.1:1"], ["list"]):
        proc = subprocess.run([sys.executable, "-m", "delivery", *argv], env=env,
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1 and proc.stdout == ""
        assert "cannot connect to http://127.0.0.1:1" in one_line_error(proc.stderr)

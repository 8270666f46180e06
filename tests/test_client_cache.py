"""The client's local cache and progress display, against a real embedded service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import pytest
import uproot
from stack import Stack, embedded_stack

from delivery import Client, Query, deliver
from delivery.client import cache
from transformers.generate import generate

pytestmark = pytest.mark.integration

COLUMNS = ["MET_pt", "Muon_pt"]
CUT = "count(Muon_pt > 20) >= 1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache-inputs")
    for i in range(3):
        generate(root / f"nano{i}.root", 1000, seed=20 + i, basket_entries=500)
    return root


@pytest.fixture(scope="module")
def stack(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("cache-stack"), [data_dir]) as s:
        yield s


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("DELIVERY_CACHE", str(root))
    return root


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, timeout=30) as c:
        yield c


def inputs(data_dir: Path) -> list[str]:
    return [str(data_dir / f"nano{i}.root") for i in range(3)]


def spec_of(data_dir: Path, query: Query | None = None) -> dict[str, Any]:
    return {"Sample": [{"Name": "zmm", "Dataset": inputs(data_dir),
                        "Query": query or Query("Events").columns(*COLUMNS).where(CUT)}]}


def expected(paths: list[str]) -> ak.Array:
    parts = []
    for p in paths:
        a = uproot.open(p)["Events"].arrays(COLUMNS)
        parts.append(a[ak.sum(a.Muon_pt > 20, axis=1) >= 1])
    return ak.concatenate(parts)


def n_requests(client: Client) -> int:
    return len(client.http.get("/servicex/transformation")["requests"])


def key_of(client: Client, spec: dict[str, Any]) -> str:
    return cache.key_for(client.http.base_url, spec["Sample"][0])


def test_a_rerun_returns_from_the_cache_without_any_http_call(
        data_dir: Path, tmp_path: Path) -> None:
    spec = spec_of(data_dir)
    with embedded_stack(tmp_path / "own", [data_dir], workers=1) as own:
        with Client(own.url) as live:
            first = deliver(spec, client=live, progress=False)
        url = own.url
    with Client(url, retries=0) as dead:  # the service is gone: any call would raise
        with pytest.raises(Exception, match="cannot connect"):
            dead.status("x")
        start = time.monotonic()
        again = deliver(spec, client=dead, progress=False)
        paths = deliver(spec, client=dead, progress=False, output="paths")
        mine = deliver(spec, client=dead, progress=False, output="paths",
                       dest_dir=tmp_path / "mine")  # copied out of the cache
    assert time.monotonic() - start < 5
    assert ak.array_equal(again["zmm"], first["zmm"])
    assert ak.array_equal(again["zmm"], expected(inputs(data_dir)))
    assert again.request_ids == first.request_ids and again.failures == []
    entry = cache.lookup(cache.key_for(url, spec["Sample"][0]))
    assert entry is not None and entry.state == "complete" and len(entry.files) == 3
    assert all(p.parent == cache.files_dir(entry.key) for p in paths["zmm"])
    assert [p.parent for p in mine["zmm"]] == [tmp_path / "mine" / "zmm"] * 3
    assert [p.read_bytes() for p in mine["zmm"]] == [p.read_bytes() for p in paths["zmm"]]


def test_a_changed_file_invalidates_the_entry_and_is_downloaded_again(
        client: Client, data_dir: Path) -> None:
    spec = spec_of(data_dir)
    first = deliver(spec, client=client, progress=False, output="paths")
    changed, *others = first["zmm"]
    size = changed.stat().st_size
    untouched = {p: p.stat().st_ino for p in others}
    with changed.open("ab") as out:
        out.write(b"tampered")
    entry = cache.lookup(key_of(client, spec))
    assert entry is not None and not entry.intact()
    before = n_requests(client)
    again = deliver(spec, client=client, progress=False, output="paths")
    assert n_requests(client) == before  # the recorded request was reused
    assert again["zmm"] == first["zmm"] and changed.stat().st_size == size
    assert {p: p.stat().st_ino for p in others} == untouched  # not downloaded again
    entry = cache.lookup(key_of(client, spec))
    assert entry is not None and entry.state == "complete" and entry.intact()
    arrays = deliver(spec, client=client, progress=False)
    assert ak.array_equal(arrays["zmm"], expected(inputs(data_dir)))


def test_an_abandoned_iterator_is_reattached_not_submitted_again(
        client: Client, data_dir: Path) -> None:
    spec = spec_of(data_dir)
    real_download = client.download
    calls: list[Any] = []

    def slow_after_the_first(*args: Any, **kwargs: Any) -> Path:
        calls.append(args)
        if len(calls) > 1:  # so the user surely walks away before the rest has landed
            time.sleep(0.5)
        return real_download(*args, **kwargs)

    client.download = slow_after_the_first  # type: ignore[method-assign]
    stream = deliver(spec, client=client, progress=False, output="iterator",
                     download_workers=1)
    chunks = iter(stream)
    name, _array = next(chunks)
    assert name == "zmm"
    chunks.close()  # the user (or a crash) walks away mid-delivery
    entry = cache.lookup(key_of(client, spec))
    assert entry is not None and entry.state == "running" and entry.files
    kept = {f.path: Path(f.path).stat().st_ino for f in entry.files}
    client.download = real_download  # type: ignore[method-assign]
    before = n_requests(client)
    got = deliver(spec, client=client, progress=False)
    assert n_requests(client) == before
    assert got.request_ids == {"zmm": entry.request_id} and got.failures == []
    assert ak.array_equal(got["zmm"], expected(inputs(data_dir)))
    for path, inode in kept.items():  # what was downloaded is not downloaded again
        assert Path(path).stat().st_ino == inode
    entry = cache.lookup(key_of(client, spec))
    assert entry is not None and entry.state == "complete" and len(entry.files) == 3


def test_clear_removes_entries_and_their_files(client: Client, data_dir: Path,
                                               cache_root: Path) -> None:
    a = deliver(spec_of(data_dir), client=client, progress=False, output="paths")
    b = deliver(spec_of(data_dir, Query("Events").columns("MET_pt")), client=client,
                progress=False, output="paths")
    files = [*a["zmm"], *b["zmm"]]
    assert len(cache.list_entries()) == 2 and all(p.exists() for p in files)
    assert cache.clear(older_than=3600) == 0
    assert cache.clear() == 2
    assert cache.list_entries() == [] and not any(p.exists() for p in files)
    assert list(cache_root.iterdir()) == []


def test_quiet_mode_prints_nothing(client: Client, data_dir: Path,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    deliver(spec_of(data_dir), client=client, progress=False)
    assert capfd.readouterr().err == ""


def test_progress_without_a_terminal_prints_few_plain_lines(
        client: Client, data_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    deliver(spec_of(data_dir), client=client, progress=True, cache=False)
    lines = capfd.readouterr().err.splitlines()
    for bar in ("transform", "download"):
        mine = [line for line in lines if line.startswith(f"zmm {bar}: ")]
        assert mine and mine[-1] == f"zmm {bar}: 3/3 files (100%)", lines
        assert len(mine) <= 4  # 0 %, 33 %, 66 %, 100 % at most for 3 files
    assert len(lines) <= 8


def test_cache_commands_list_and_clear(client: Client, data_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from delivery.cli import main

    deliver(spec_of(data_dir), client=client, progress=False)
    capsys.readouterr()
    assert main(["cache", "list", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert (entry["state"], entry["files"], entry["intact"]) == ("complete", 3, True)
    assert main(["cache", "list"]) == 0
    assert "1 entries in" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 cache entries" in capsys.readouterr().out
    assert cache.list_entries() == []

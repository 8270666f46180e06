"""Every output format into awkward (arrays, iterator, dask) on a real embedded service.

The reference is always uproot reading the inputs and the cut applied in awkward.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import pytest
import uproot
from stack import Stack, embedded_stack

from delivery import Client, Query, deliver
from transformers.generate import generate

pytestmark = pytest.mark.integration

COLUMNS = ["MET_pt", "Muon_pt", "nMuon", "Muon_charge"]
CUT = "count(Muon_pt > 20) >= 1"
FORMATS = ["parquet", "arrow", "root-file"]
SUFFIX = {"parquet": ".parquet", "arrow": ".arrow", "root-file": ".root"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("format-inputs")
    for i in range(3):
        generate(root / f"nano{i}.root", 1500 + 500 * i, seed=50 + i, basket_entries=1000)
    return root


@pytest.fixture(scope="module")
def stack(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("format-stack"), [data_dir]) as s:
        yield s


@pytest.fixture
def client(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setenv("DELIVERY_CACHE", str(tmp_path / "cache"))
    with Client(stack.url, timeout=30) as c:
        yield c


def inputs(data_dir: Path) -> list[str]:
    return [str(data_dir / f"nano{i}.root") for i in range(3)]


def expected(paths: list[str]) -> ak.Array:
    parts = []
    for p in paths:
        a = uproot.open(p)["Events"].arrays(COLUMNS)
        parts.append(a[ak.sum(a.Muon_pt > 20, axis=1) >= 1])
    return ak.concatenate(parts)


def spec(data_dir: Path, fmt: str, name: str = "s", query: Query | None = None) -> dict[str, Any]:
    return {"Sample": [{"Name": name, "Dataset": inputs(data_dir), "Format": fmt,
                        "Query": query or Query("Events").columns(*COLUMNS).where(CUT)}]}


def same(got: ak.Array, want: ak.Array) -> None:
    assert got.fields == want.fields
    assert str(got.type) == str(want.type)  # float32 stays float32, no option types added
    for name in want.fields:
        assert ak.array_equal(got[name], want[name]), name


@pytest.mark.parametrize("fmt", FORMATS)
def test_arrays_iterator_and_dask_equal_uproot_with_the_cut(client: Client, data_dir: Path,
                                                            fmt: str) -> None:
    want = expected(inputs(data_dir))
    assert 0 < len(want) < 4500 + 1500  # the cut keeps some events and drops some

    got = deliver(spec(data_dir, fmt), client=client, progress=False)
    same(got["s"], want)

    # again from the local cache (no HTTP): the same arrays
    same(deliver(spec(data_dir, fmt), client=client, progress=False)["s"], want)

    stream = deliver(spec(data_dir, fmt), client=client, output="iterator", progress=False,
                     cache=False)
    chunks = list(stream)
    assert [name for name, _ in chunks] == ["s"] * 3 and stream.failures == []
    # files arrive in any order: each chunk is one input's events, each input once
    per_input = [expected([p]) for p in inputs(data_dir)]
    matched = sorted(next(i for i, w in enumerate(per_input) if len(w) == len(a)
                          and ak.array_equal(a, w)) for _, a in chunks)
    assert matched == [0, 1, 2]

    lazy = deliver(spec(data_dir, fmt), client=client, output="dask", progress=False)
    import dask_awkward as dak

    array = lazy["s"]
    assert isinstance(array, dak.Array) and array.npartitions == 3
    same(array.compute(), want)
    paths = deliver(spec(data_dir, fmt), client=client, output="paths", progress=False)["s"]
    assert [p.suffix for p in paths] == [SUFFIX[fmt]] * 3


def test_root_file_expressions_come_back_under_their_branch_names(client: Client,
                                                                  data_dir: Path) -> None:
    query = Query("Events").columns("MET_pt").define("twice", "Muon_pt * 2").where(CUT)
    sel = [{"treename": "Events", "expressions": ["MET_pt", "Muon_pt * 2"], "cut": CUT}]
    want = expected(inputs(data_dir))
    for fmt in FORMATS:
        by_alias = deliver(spec(data_dir, fmt, query=query), client=client,
                           progress=False)["s"]
        assert by_alias.fields == ["MET_pt", "twice"]
        assert ak.array_equal(by_alias.twice, want.Muon_pt * 2)
        s = {"Sample": [{"Name": "e", "Dataset": inputs(data_dir), "Format": fmt,
                         "Query": sel}]}
        by_text = deliver(s, client=client, progress=False)["e"]
        text = "Muon_pt___2" if fmt == "root-file" else "Muon_pt * 2"
        assert by_text.fields == ["MET_pt", text]
        assert ak.array_equal(by_text[text], want.Muon_pt * 2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_result_keeps_its_type(client: Client, data_dir: Path, fmt: str) -> None:
    query = Query("Events").columns("MET_pt", "Muon_pt").where("MET_pt < -1")
    got = deliver(spec(data_dir, fmt, query=query), client=client, progress=False)["s"]
    assert len(got) == 0 and got.fields == ["MET_pt", "Muon_pt"]
    assert str(got.type) == "0 * {MET_pt: float32, Muon_pt: var * float32}"
    lazy = deliver(spec(data_dir, fmt, query=query), client=client, output="dask",
                   progress=False)["s"]
    assert str(lazy.compute().type) == str(got.type)


def test_a_multi_tree_root_output_is_refused_before_any_http_call() -> None:
    dead = Client("http://127.0.0.1:9", retries=0)  # a TransientError if it were contacted
    two = [{"treename": ["Events", "Runs"], "filter_name": ["run"]}]
    sample = {"Name": "x", "Dataset": ["/a.root"], "Format": "root-file", "Query": two}
    with pytest.raises(ValueError, match="2 trees .* output=\"paths\""):
        deliver({"Sample": [sample]}, client=dead)


def test_dask_without_dask_awkward_is_an_import_error_before_submitting(
        monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "dask_awkward", None)  # "import dask_awkward" fails
    dead = Client("http://127.0.0.1:9", retries=0)
    with pytest.raises(ImportError, match=r"columnar-delivery\[dask\]"):
        deliver(spec(data_dir, "parquet"), client=dead, output="dask")

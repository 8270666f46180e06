"""The engine on real ROOT files written by ROOT: codecs, formats, TTree vs RNTuple, edge cases.

Every expected value is computed here from arrays read directly with uproot and
cut by hand with awkward/numpy, never with the engine's own evaluator.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot

from delivery.errors import InputError, PermanentError, SelectionError
from delivery.policy import SourcePolicy
from delivery.selection.model import parse_selection
from transformers.run import FileResult, TransformOptions, output_path, transform_file

REPO = Path(__file__).resolve().parents[1]
CODECS = ["", "-lz4", "-zstd", "-lzma", "-uncompressed"]
HZZ_COLUMNS = ["NMuon", "Muon_Px", "Muon_Py", "MET_px"]
HZZ_CUT = "count(Muon_Px > 0) >= 1 and MET_px > -50"
NANO_TTREE = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
NANO_RNTUPLE = "cmsopendata2015_ttbar_19980_NANOAOD_RNTupleImporter_rntuple_v1-0-0-1.root"
RUN2012 = "Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root"
PHYSLITE = "uproot-physlite-rntuple_v1-0-0-0.root"


def _kernels_work() -> bool:
    try:
        from transformers.kernels import compile_kernel  # noqa: F401
    except Exception:
        return False
    return True


# Cut tests run on the awkward evaluator and, when the numba module is there, on the kernels.
NUMBA = [False, True] if _kernels_work() else [False]


@pytest.fixture(scope="module", autouse=True)
def _kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Generated kernels go to a temporary cache, not the user's home (unless one is set)."""
    if os.environ.get("DELIVERY_KERNEL_CACHE"):
        yield
        return
    os.environ["DELIVERY_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("kernels"))
    try:
        yield
    finally:
        os.environ.pop("DELIVERY_KERNEL_CACHE", None)


def run(path: Path | str, selection: Any, out: Path, policy: SourcePolicy, *,
        numba: bool = False, request_id: str = "test", **options: Any) -> FileResult:
    return transform_file(str(path), parse_selection(selection), out, policy=policy,
                          request_id=request_id,
                          options=TransformOptions(numba=numba, **options))


def read_output(path: str | Path, fmt: str = "parquet", tree: str = "events") -> ak.Array:
    if fmt == "parquet":
        return ak.from_parquet(path)
    if fmt == "arrow":
        with pa.ipc.open_file(path) as reader:
            return ak.from_arrow(reader.read_all())
    with uproot.open(path) as f:
        return f[tree].arrays(library="ak")


def assert_same(actual: ak.Array, expected: ak.Array, columns: list[str]) -> None:
    """Same length, values and scalar dtypes, column by column."""
    assert len(actual) == len(expected)
    for c in columns:
        a, e = actual[c], expected[c]
        assert ak.to_list(a) == ak.to_list(e), c
        assert _dtype(a) == _dtype(e), c
        assert a.ndim == e.ndim, c


def _dtype(array: ak.Array) -> np.dtype:
    return ak.to_numpy(ak.flatten(array, axis=None)).dtype


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def hzz_direct(path: Path) -> ak.Array:
    with uproot.open(path) as f:
        return f["events"].arrays(HZZ_COLUMNS + ["Jet_Px"], library="ak")


# --- codecs and formats ------------------------------------------------------------------------

@pytest.mark.parametrize("numba", NUMBA)
def test_hzz_same_output_in_every_codec(shared_data: Path, policy: SourcePolicy, tmp_path: Path,
                                        numba: bool) -> None:
    selection = {"treename": "events", "filter_name": HZZ_COLUMNS, "cut": HZZ_CUT}
    tables = {}
    for codec in CODECS:
        res = run(shared_data / f"uproot-HZZ{codec}.root", selection, tmp_path / f"o{codec}",
                  policy, numba=numba)
        assert res.events_in == 2421 and res.error is None
        tables[codec] = pq.read_table(res.output)
        assert tables[codec].num_rows == res.events_out
    reference = tables[""]
    for codec, table in tables.items():
        assert table.schema.equals(reference.schema, check_metadata=True), codec
        assert table.equals(reference), codec

    # The expected events, cut by hand on what uproot reads.
    raw = hzz_direct(shared_data / "uproot-HZZ.root")
    mask = (ak.sum(raw.Muon_Px > 0, axis=1) >= 1) & (raw.MET_px > -50)
    expected = raw[mask]
    assert 0 < len(expected) < len(raw)
    got = ak.from_arrow(reference)
    assert got.fields == HZZ_COLUMNS
    assert_same(got, expected, HZZ_COLUMNS)

    # Small steps (several chunks) give the same table as one big step.
    res = run(shared_data / "uproot-HZZ.root", selection, tmp_path / "small-steps", policy,
              numba=numba, step_bytes=1)
    assert pq.read_table(res.output).equals(reference)


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "root-file"])
def test_every_format_round_trips(shared_data: Path, policy: SourcePolicy, tmp_path: Path,
                                  fmt: str) -> None:
    res = run(shared_data / "uproot-HZZ.root",
              {"treename": "events", "filter_name": HZZ_COLUMNS, "cut": HZZ_CUT},
              tmp_path / "out", policy, format=fmt)
    assert Path(res.output).name.endswith({"parquet": ".parquet", "arrow": ".arrow",
                                           "root-file": ".root"}[fmt])
    assert res.bytes == Path(res.output).stat().st_size
    raw = hzz_direct(shared_data / "uproot-HZZ.root")
    expected = raw[(ak.sum(raw.Muon_Px > 0, axis=1) >= 1) & (raw.MET_px > -50)]
    got = read_output(res.output, fmt)
    assert set(HZZ_COLUMNS) <= set(got.fields)
    assert_same(got, expected, HZZ_COLUMNS)
    assert res.events_out == len(expected)


# --- TTree vs RNTuple ---------------------------------------------------------------------------

def test_nanoaod_ttree_and_rntuple_answer_the_same_query(shared_data: Path, policy: SourcePolicy,
                                                         tmp_path: Path) -> None:
    exprs = ["run", "event", "Muon_pt", "MET_pt", "Muon_pt * 2"]
    selection = {"treename": "Events", "expressions": exprs, "cut": "count(Muon_pt > 5) >= 1"}
    outputs, directs = {}, {}
    for name in (NANO_TTREE, NANO_RNTUPLE):
        res = run(shared_data / name, selection, tmp_path / name, policy)
        outputs[name] = pq.read_table(res.output)
        with uproot.open(shared_data / name) as f:
            # Field by field: RNTuple.arrays() first lists all ~1300 fields (slow in uproot).
            raw = ak.zip({c: f["Events"][c].array(library="ak")
                          for c in ("run", "event", "Muon_pt", "MET_pt")}, depth_limit=1)
        raw = raw[ak.sum(raw.Muon_pt > 5, axis=1) >= 1]
        directs[name] = ak.zip({"run": raw.run, "event": raw.event, "Muon_pt": raw.Muon_pt,
                                "MET_pt": raw.MET_pt, "Muon_pt * 2": raw.Muon_pt * 2},
                               depth_limit=1)
        got = ak.from_arrow(outputs[name])
        assert got.fields == exprs
        assert_same(got, directs[name], exprs)
        assert 0 < res.events_out < res.events_in
    # Same query, same output schema (names and types) from a TTree and an RNTuple.
    assert outputs[NANO_TTREE].schema.equals(outputs[NANO_RNTUPLE].schema)

    # Events the two files share (by run, event) must have the same values. The files
    # shipped today share none: the TTree holds events 227291401-227291927 (lumi block
    # 2272915) and the RNTuple 44727241-44727250 (lumi block 224561) of run 1. Then the
    # schema comparison above and the per-file checks against uproot are what is compared.
    def by_key(table: pa.Table) -> dict[tuple[int, int], dict[str, Any]]:
        return {(r["run"], r["event"]): r for r in table.to_pylist()}

    tree, ntuple = by_key(outputs[NANO_TTREE]), by_key(outputs[NANO_RNTUPLE])
    for key in tree.keys() & ntuple.keys():
        assert tree[key] == ntuple[key], key
    keys = []
    for name in (NANO_TTREE, NANO_RNTUPLE):
        with uproot.open(shared_data / name) as f:
            keys.append(set(zip(f["Events"]["run"].array(library="np").tolist(),
                                f["Events"]["event"].array(library="np").tolist(), strict=True)))
    shared = keys[0] & keys[1]
    assert shared == set(), "the files now share events: compare them above, not just schemas"


@pytest.mark.parametrize("numba", NUMBA)
def test_run2012_rntuple_cut_really_filters(shared_data: Path, policy: SourcePolicy,
                                            tmp_path: Path, numba: bool) -> None:
    columns = ["nMuon", "Muon_pt", "Muon_eta", "Muon_charge"]
    res = run(shared_data / RUN2012,
              {"treename": "Events", "filter_name": columns,
               "cut": "nMuon >= 2 and count(Muon_pt > 20) >= 2"},
              tmp_path / "out", policy, numba=numba)
    with uproot.open(shared_data / RUN2012) as f:
        raw = f["Events"].arrays(columns, library="ak")
    mask = (raw.nMuon >= 2) & (ak.sum(raw.Muon_pt > 20, axis=1) >= 2)
    assert res.events_in == 1000
    assert 0 < res.events_out < 1000
    assert res.events_out == int(np.sum(mask))
    assert_same(ak.from_parquet(res.output), raw[mask], columns)


@pytest.mark.parametrize("numba", NUMBA)
def test_jagged_cut_filters_elements_not_events(shared_data: Path, policy: SourcePolicy,
                                                tmp_path: Path, numba: bool) -> None:
    res = run(shared_data / "uproot-HZZ.root",
              {"treename": "events", "filter_name": HZZ_COLUMNS, "cut": "Muon_Px > 20"},
              tmp_path / "out", policy, numba=numba)
    raw = hzz_direct(shared_data / "uproot-HZZ.root")
    keep = raw.Muon_Px > 20
    got = ak.from_parquet(res.output)
    assert res.events_out == len(raw) == len(got)  # every event stays
    assert ak.to_list(got.Muon_Px) == ak.to_list(raw.Muon_Px[keep])
    assert ak.to_list(got.Muon_Py) == ak.to_list(raw.Muon_Py[keep])  # same collection
    assert ak.to_list(got.MET_px) == ak.to_list(raw.MET_px)  # one value per event: untouched
    # The counter branch is copied as it is: it no longer matches the filtered collection.
    assert ak.to_list(got.NMuon) == ak.to_list(raw.NMuon)
    assert ak.any(ak.num(got.Muon_Px) < got.NMuon)


def test_jagged_cut_on_another_collection_is_refused(shared_data: Path, policy: SourcePolicy,
                                                     tmp_path: Path) -> None:
    with pytest.raises(SelectionError, match="reduce it with any"):
        run(shared_data / "uproot-HZZ.root",
            {"treename": "events", "filter_name": ["Jet_Px"], "cut": "Muon_Px > 20"},
            tmp_path / "out", policy)
    assert files_in(tmp_path / "out") == []


# --- missing trees and branches -----------------------------------------------------------------

def test_missing_tree_with_fail_on_missing_trees_lists_existing_trees(
        shared_data: Path, policy: SourcePolicy, tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        run(shared_data / "uproot-HZZ.root",
            {"treename": ["events", "nope"], "filter_name": ["NMuon"],
             "fail_on_missing_trees": True},
            tmp_path / "out", policy, format="root-file")
    assert "'nope'" in err.value.reason and "it has: events" in err.value.reason
    assert files_in(tmp_path / "out") == []


def test_missing_tree_without_fail_warns_and_reads_the_others(
        shared_data: Path, policy: SourcePolicy, tmp_path: Path) -> None:
    res = run(shared_data / "uproot-HZZ.root",
              {"treename": ["nope", "events"], "filter_name": ["NMuon"],
               "fail_on_missing_trees": False},
              tmp_path / "out", policy, format="root-file")
    assert len(res.warnings) == 1 and "'nope'" in res.warnings[0]
    assert "it has: events" in res.warnings[0]
    assert res.events_out == 2421
    with uproot.open(res.output) as f:
        assert [k.split(";")[0] for k in f.keys()] == ["events"]


def test_all_trees_missing_is_an_input_error(shared_data: Path, policy: SourcePolicy,
                                             tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no TTree or RNTuple 'nope'.*it has: events"):
        run(shared_data / "uproot-HZZ.root", {"treename": ["nope", "nope2"]},
            tmp_path / "out", policy)
    assert files_in(tmp_path / "out") == []


_MISSING_QUERIES = [
    {"filter_name": ["nMuon", "Muon_PT"]},
    {"filter_name": ["nMuon"], "cut": "count(Muon_PT > 20) >= 1"},
    {"expressions": ["nMuon", "Muon_PT * 2"]},
    {"expressions": ["Muon_PT"]},
]


# Every query on the TTree; one on the RNTuple (each RNTuple open costs ~5 s in uproot).
@pytest.mark.parametrize("file,query", [
    *[(NANO_TTREE, q) for q in _MISSING_QUERIES], (NANO_RNTUPLE, _MISSING_QUERIES[1]),
])
def test_missing_branch_names_close_matches(shared_data: Path, policy: SourcePolicy,
                                            tmp_path: Path, file: str,
                                            query: dict[str, Any]) -> None:
    with pytest.raises(InputError) as err:
        run(shared_data / file, {"treename": "Events", **query}, tmp_path / "out", policy)
    reason = str(err.value)
    assert "'Muon_PT'" in reason and "close matches" in reason and "Muon_pt" in reason
    assert "\n" not in reason
    assert files_in(tmp_path / "out") == []


# --- empty results --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "arrow", "root-file"])
def test_cut_that_nothing_passes_writes_the_full_schema(shared_data: Path, policy: SourcePolicy,
                                                        tmp_path: Path, fmt: str) -> None:
    base = {"treename": "events", "expressions": HZZ_COLUMNS + ["Muon_Px * 2"]}
    full = run(shared_data / "uproot-HZZ.root", base, tmp_path / "full", policy, format=fmt)
    empty = run(shared_data / "uproot-HZZ.root", {**base, "cut": "MET_px > 1e9"},
                tmp_path / "empty", policy, format=fmt)
    assert empty.events_in == 2421 and empty.events_out == 0 and full.events_out == 2421
    got_full, got_empty = read_output(full.output, fmt), read_output(empty.output, fmt)
    assert len(got_empty) == 0
    assert got_empty.fields == got_full.fields
    assert str(got_empty.type.content) == str(got_full.type.content)
    if fmt == "parquet":
        assert pq.read_schema(empty.output).equals(pq.read_schema(full.output))


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "root-file"])
def test_tree_with_no_entries_writes_the_schema(policy: SourcePolicy, tmp_path: Path,
                                                fmt: str) -> None:
    src = tmp_path / "zero.root"
    branches = {"x": np.float32, "n": np.int32, "pt": "var * float64"}
    with uproot.recreate(src) as f:
        f.mktree("empty", branches)  # never extended: 0 entries
        f.mktree("full", branches)
        f["full"].extend({"x": np.ones(3, np.float32), "n": np.arange(3, dtype=np.int32),
                          "pt": ak.Array([[1.0], [], [2.0, 3.0]])})
    query = {"filter_name": ["x", "n", "pt"], "cut": "count(pt > 0) >= 0"}
    res = run(src, {"treename": {"empty": "events"}, **query}, tmp_path / "e", policy, format=fmt)
    ref = run(src, {"treename": {"full": "events"}, **query}, tmp_path / "f", policy, format=fmt)
    assert (res.events_in, res.events_out, ref.events_out) == (0, 0, 3)
    got, expected = read_output(res.output, fmt), read_output(ref.output, fmt)
    assert len(got) == 0 and got.fields == expected.fields
    assert str(got.type.content) == str(expected.type.content)


# --- several trees, histograms ---------------------------------------------------------------

@pytest.fixture
def small_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A ROOT file made by uproot: two trees and three histograms."""
    rng = np.random.default_rng(7)
    pt = rng.exponential(20, 500)
    path = tmp_path / "small.root"
    with uproot.recreate(path) as f:
        f.mktree("events", {"pt": np.float64, "n": np.int32})
        f["events"].extend({"pt": pt, "n": np.arange(500, dtype=np.int32)})
        f.mktree("other", {"x": np.float32})
        f["other"].extend({"x": np.arange(10, dtype=np.float32)})
        f["h_pt"] = np.histogram(pt, bins=10, range=(0, 100))
        f["h_eta"] = np.histogram(rng.normal(size=100), bins=5)
        f["other_hist"] = np.histogram(pt, bins=3)
    return path, pt


def _names(path: str) -> dict[str, str]:
    with uproot.open(path) as f:
        return {k.split(";")[0]: v for k, v in f.classnames().items()}


def test_several_trees_into_one_root_file(small_file: tuple[Path, np.ndarray],
                                          policy: SourcePolicy, tmp_path: Path) -> None:
    path, pt = small_file
    res = run(path, {"treename": ["events", "other"], "filter_name": ["*"]},
              tmp_path / "list", policy, format="root-file")
    assert _names(res.output) == {"events": "TTree", "other": "TTree"}
    assert (res.events_in, res.events_out) == (510, 510)
    with uproot.open(res.output) as f:
        assert np.array_equal(f["events"]["pt"].array(library="np"), pt)
        assert np.array_equal(f["other"]["x"].array(library="np"), np.arange(10))

    res = run(path, {"treename": {"events": "renamed"}, "filter_name": ["pt"], "cut": "pt > 20"},
              tmp_path / "dict", policy, format="root-file")
    assert _names(res.output) == {"renamed": "TTree"}
    with uproot.open(res.output) as f:
        assert np.array_equal(f["renamed"]["pt"].array(library="np"), pt[pt > 20])


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_two_trees_need_root_file_output(small_file: tuple[Path, np.ndarray],
                                         policy: SourcePolicy, tmp_path: Path, fmt: str) -> None:
    with pytest.raises(SelectionError, match="holds one tree; this selection reads 2"):
        run(small_file[0], {"treename": ["events", "other"]}, tmp_path / "out", policy,
            format=fmt)
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("pattern,copied", [
    ("h_*", {"h_pt", "h_eta"}),
    ("/^h_p/", {"h_pt"}),
    ("/HIST$/i", {"other_hist"}),
    ("h_pt", {"h_pt"}),
    ("nothing*", set()),
])
def test_copy_histograms_into_root_output(small_file: tuple[Path, np.ndarray],
                                          policy: SourcePolicy, tmp_path: Path,
                                          pattern: str, copied: set[str]) -> None:
    path, pt = small_file
    res = run(path, [{"treename": "events", "filter_name": ["pt"]}, {"copy_histograms": pattern}],
              tmp_path / "out", policy, format="root-file")
    names = _names(res.output)
    assert names.pop("events") == "TTree"
    assert set(names) == copied and all(v == "TH1D" for v in names.values())
    if "h_pt" in copied:
        with uproot.open(res.output) as f:
            counts, edges = np.histogram(pt, bins=10, range=(0, 100))
            assert np.array_equal(f["h_pt"].values(), counts)
            assert np.allclose(f["h_pt"].axis().edges(), edges)


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_copy_histograms_needs_root_file_output(small_file: tuple[Path, np.ndarray],
                                                policy: SourcePolicy, tmp_path: Path,
                                                fmt: str) -> None:
    with pytest.raises(SelectionError, match="copy_histograms needs root-file output"):
        run(small_file[0], [{"treename": "events"}, {"copy_histograms": "h_*"}],
            tmp_path / "out", policy, format=fmt)
    assert files_in(tmp_path / "out") == []


def test_root_output_branch_names(shared_data: Path, policy: SourcePolicy,
                                  tmp_path: Path) -> None:
    """Expression texts become ROOT identifiers; two columns never silently become one."""
    src = shared_data / "uproot-HZZ.root"
    res = run(src, {"treename": "events", "expressions": ["MET_px * 2", "half"],
                    "aliases": {"half": "MET_px / 2"}}, tmp_path / "ok", policy,
              format="root-file")
    with uproot.open(src) as f:
        met = f["events"]["MET_px"].array(library="np")
    with uproot.open(res.output) as f:
        assert f["events"].keys() == ["MET_px___2", "half"]
        assert np.array_equal(f["events"]["MET_px___2"].array(library="np"), met * 2)
        assert np.array_equal(f["events"]["half"].array(library="np"), met / 2)

    with pytest.raises(SelectionError, match="would both be the ROOT branch 'MET_px___2'"):
        run(src, {"treename": "events", "expressions": ["MET_px * 2", "MET_px / 2"]},
            tmp_path / "same", policy, format="root-file")
    with pytest.raises(SelectionError, match="counter branch of the jagged column 'Muon_Px'"):
        run(src, {"treename": "events", "expressions": ["Muon_Px", "nMuon_Px"],
                  "aliases": {"nMuon_Px": "NMuon"}}, tmp_path / "counter", policy,
            format="root-file")
    assert files_in(tmp_path / "same") == files_in(tmp_path / "counter") == []


# --- ATLAS PHYSLITE RNTuple, ROOT objects --------------------------------------------------------

def test_physlite_rntuple_fields_by_exact_name(shared_data: Path, policy: SourcePolicy,
                                               tmp_path: Path) -> None:
    # Top-level fields ("...AuxDyn:x") and dotted sub-fields of a record ("xTrigDecisionAux:.smk")
    # and of a collection of records (an ElementLink's "m_persKey").
    fields = ["EventInfoAuxDyn:eventNumber", "EventInfoAuxDyn:runNumber",
              "AnalysisMuonsAuxDyn:pt", "xTrigDecisionAux:.smk",
              "AnalysisJetsAuxDyn:btaggingLink.m_persKey"]
    # One engine call only: uproot 5.7 spends ~10 s listing this RNTuple's 1077 fields.
    res = run(shared_data / PHYSLITE, {"treename": "EventData", "filter_name": fields},
              tmp_path / "out", policy)
    got = ak.from_parquet(res.output)
    assert got.fields == fields and res.events_in == res.events_out == 100
    with uproot.open(shared_data / PHYSLITE) as f:
        ntuple = f["EventData"]
        for name in fields:  # field by field: cheap, unlike ntuple.arrays()
            expected = ntuple[name].array(library="ak")
            assert ak.to_list(got[name]) == ak.to_list(expected), name
            assert _dtype(got[name]) == _dtype(expected), name
    assert ak.sum(ak.num(got["AnalysisMuonsAuxDyn:pt"])) > 0


def test_tlorentzvector_branch(shared_data: Path, policy: SourcePolicy, tmp_path: Path) -> None:
    """``std::vector<TLorentzVector>``: works as nested records in Parquet/Arrow; ROOT output
    and expressions refuse it with a one-line reason."""
    path = shared_data / "uproot-HZZ-objects.root"
    res = run(path, {"treename": "events", "filter_name": ["muonp4", "muonq"]},
              tmp_path / "pq", policy)
    got = ak.from_parquet(res.output)
    with uproot.open(path) as f:
        direct = f["events"].arrays(["muonp4", "muonq"], library="ak")
    assert len(got) == len(direct) == 2421
    p4 = direct.muonp4
    assert ak.to_list(got.muonp4.fE) == ak.to_list(p4.fE)
    assert ak.to_list(got.muonp4.fP.fX) == ak.to_list(p4.fP.fX)
    assert ak.to_list(got.muonp4.fP.fZ) == ak.to_list(p4.fP.fZ)
    assert ak.to_list(got.muonq) == ak.to_list(direct.muonq)

    with pytest.raises(InputError) as err:
        run(path, {"treename": "events", "filter_name": ["muonp4"]}, tmp_path / "root",
            policy, format="root-file")
    assert "cannot be written as root-file output" in err.value.reason
    assert "\n" not in str(err.value)
    assert files_in(tmp_path / "root") == []

    for query in ({"filter_name": ["muonq"], "cut": "count(muonp4) > 1"},
                  {"expressions": ["muonp4 * 2"]}):
        with pytest.raises(SelectionError, match="'muonp4' is nested deeper than one list"):
            run(path, {"treename": "events", **query}, tmp_path / "expr", policy)


# --- output naming and temporary files --------------------------------------------------------

def test_output_names_are_deterministic_and_temp_files_vanish(
        shared_data: Path, policy: SourcePolicy, tmp_path: Path) -> None:
    src = shared_data / "uproot-HZZ.root"
    out = tmp_path / "out"
    first = run(src, {"treename": "events", "filter_name": ["MET_px"]}, out, policy,
                request_id="r1")
    again = run(src, {"treename": "events", "filter_name": ["MET_px", "NMuon"]}, out, policy,
                request_id="r1")
    assert again.output == first.output == str(output_path(out, "r1", str(src), "parquet"))
    assert files_in(out) == [Path(first.output).name]  # overwritten, not duplicated
    assert ak.from_parquet(again.output).fields == ["MET_px", "NMuon"]

    other = run(src, {"treename": "events", "filter_name": ["MET_px"]}, out, policy,
                request_id="r2")
    assert other.output != first.output
    assert Path(other.output).name.startswith("uproot-HZZ.")
    assert len(files_in(out)) == 2

    # A re-run that fails after its sink was opened (the jagged cut does not fit Jet_Px)
    # leaves neither a temporary file nor damage to the earlier complete output.
    with pytest.raises(SelectionError):
        run(src, {"treename": "events", "filter_name": ["Jet_Px"], "cut": "Muon_Px > 20"},
            out, policy, request_id="r1")
    assert not [n for n in files_in(out) if n.endswith(".part")]
    assert len(files_in(out)) == 2
    assert ak.from_parquet(first.output).fields == ["MET_px", "NMuon"]


def test_failure_after_the_sink_opened_leaves_nothing(shared_data: Path, policy: SourcePolicy,
                                                      tmp_path: Path) -> None:
    # muonp4 reaches the ROOT sink before failing: the temporary file must be removed.
    out = tmp_path / "out"
    with pytest.raises(InputError):
        run(shared_data / "uproot-HZZ-objects.root",
            {"treename": "events", "filter_name": ["muonq", "muonp4"]}, out, policy,
            format="root-file")
    assert files_in(out) == []


# --- uproot's own expression evaluation is never reached --------------------------------------

def _sources() -> dict[str, str]:
    paths = sorted(p for d in ("transformers", "delivery") for p in (REPO / d).rglob("*.py"))
    return {p.relative_to(REPO).as_posix(): p.read_text() for p in paths}


_UPROOT_READS = ("arrays", "iterate", "concatenate", "dask", "lazy")


def _eval_problems(sources: dict[str, str]) -> list[str]:
    """Calls that could reach uproot's (or Python's) evaluation of user text."""
    trees = {rel: ast.parse(text, rel) for rel, text in sources.items()}
    # Our own dataclasses (TreeQuery, ...) may take cut=/expressions=/aliases=.
    own = {n.name for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.ClassDef)}
    problems: list[str] = []
    for rel, tree in trees.items():
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else None)
            where = f"{rel}:{node.lineno}"
            if isinstance(func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}: calls {name}()")
            if isinstance(func, ast.Attribute) and name in ("eval", "exec"):
                problems.append(f"{where}: calls .{name}()")
            if name not in own:
                for kw in node.keywords:
                    if kw.arg in ("cut", "expressions", "aliases"):
                        problems.append(f"{where}: passes {kw.arg}= to {ast.unparse(func)}")
            if isinstance(func, ast.Attribute) and name in _UPROOT_READS:
                receiver = ast.unparse(func.value)
                # uproot.concatenate(files, expressions, cut) / tree.arrays(expressions, cut)
                allowed = 1 if receiver == "uproot" else 0
                if receiver in ("self.obj", "uproot") and len(node.args) > allowed:
                    problems.append(f"{where}: positional arguments to {ast.unparse(func)}")
                if any(kw.arg is None for kw in node.keywords):
                    problems.append(f"{where}: **keywords to {ast.unparse(func)}")
            if name == "exec_module":
                # Only the kernel loader may execute a module: the one it generated from the
                # expression IR, wrote to its cache and imports with importlib.
                fn: ast.AST = node
                while fn in parents and not isinstance(fn, ast.FunctionDef):
                    fn = parents[fn]
                source = ast.unparse(fn) if isinstance(fn, ast.FunctionDef) else ""
                if not (rel == "transformers/kernels.py"
                        and ast.unparse(func.value) == "spec.loader"
                        and "spec = importlib.util.spec_from_file_location(" in source
                        and "importlib.util.module_from_spec(spec)" in source):
                    problems.append(f"{where}: exec_module outside the kernel loader")
    return problems


def test_no_uproot_expression_evaluation_or_eval_anywhere() -> None:
    sources = _sources()
    assert {"transformers/table.py", "transformers/run.py",
            "delivery/selection/model.py"} <= set(sources)
    assert _eval_problems(sources) == []


def test_the_eval_checker_catches_what_it_should() -> None:
    bad = {
        "transformers/x.py": (
            "import uproot\n"
            "def f(t, obj, q):\n"
            "    t.arrays(cut=q)\n"
            "    uproot.concatenate('f.root', 'a', 'b > 1')\n"
            "    obj.iterate(expressions=['a'])\n"
            "    obj.arrays(**q)\n"
            "    eval(q)\n"
            "    exec(q)\n"
            "    df.eval(q)\n"
            "    spec.loader.exec_module(m)\n"
            "class Table:\n"
            "    def read(self, q):\n"
            "        return self.obj.arrays(q, q)\n"
        ),
        "delivery/ok.py": (
            "class TreeQuery:\n    pass\n"
            "def g(t):\n    TreeQuery(cut=1, expressions=2, aliases=3)\n"
            "    t.arrays(filter_name=set().__contains__, library='ak')\n"
        ),
    }
    found = _eval_problems(bad)
    lines = sorted(int(p.split(":")[1]) for p in found if p.startswith("transformers/x.py"))
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10, 13]
    assert not [p for p in found if p.startswith("delivery/ok.py")]


def test_table_reads_branches_by_a_name_callable(shared_data: Path) -> None:
    """The filter uproot gets is a membership test, so a name is never a pattern or expression."""
    from transformers.table import Table

    with uproot.open(shared_data / "uproot-HZZ.root") as f:
        table = Table(f["events"], "events", "test")
        with pytest.raises(InputError, match="matches no branch"):
            table.match(["MET_px * 2"], "expressions")  # not evaluated, not a branch either
        with pytest.raises(InputError, match="matches no branch"):
            table.match(["/MET.*/"], "filter_name")  # a glob here, never a regular expression
        chunk = table.read(["MET_px"], 0, 5)
    assert chunk.fields == ["MET_px"] and len(chunk) == 5


def test_errors_are_permanent_subclasses() -> None:
    assert issubclass(InputError, PermanentError) and issubclass(SelectionError, PermanentError)

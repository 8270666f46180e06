from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import transformers.generate as gen
from transformers.generate import CODECS, GenerateSummary, generate

N_EVENTS = 25_000
BASKET = 5_000


def _make(tmp_path: Path, layout: str, codec: str = "ZSTD", **kw: object) -> GenerateSummary:
    path = tmp_path / f"{layout}_{codec}.root"
    return generate(path, N_EVENTS, layout=layout, codec=codec, basket_entries=BASKET, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["ttree", "rntuple"])
@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip(tmp_path: Path, layout: str, codec: str) -> None:
    # LZMA at ROOT's default level 7 runs at ~1 MB/s; its level is covered below.
    summary = _make(tmp_path, layout, codec, level=1 if codec == "LZMA" else None)
    assert summary.n_events == N_EVENTS and summary.codec == codec and summary.layout == layout
    assert summary.n_bytes == Path(summary.path).stat().st_size > 0
    assert not Path(summary.path + ".tmp").exists()
    with uproot.open(summary.path) as f:
        obj = f["Events"]
        assert obj.num_entries == N_EVENTS
        assert len(obj.keys()) == summary.n_branches >= 60
        arrays = obj.arrays(["event", "run", "luminosityBlock", "MET_pt", "nMuon", "Muon_pt"])
        assert "hist_muon_pt" in f and "cutflow" in f and "hist_met" in f
    event = arrays["event"].to_numpy()
    assert event.dtype == np.uint64 and np.all(np.diff(event.astype(np.int64)) > 0)
    assert arrays["run"].to_numpy().dtype == np.uint32
    assert arrays["MET_pt"].to_numpy().dtype == np.float32
    pt = arrays["Muon_pt"]
    assert str(pt.type.content) == "var * float32"
    assert ak.all(ak.num(pt) == arrays["nMuon"])
    assert ak.all(pt >= 3.0)


@pytest.mark.parametrize("layout", ["ttree", "rntuple"])
def test_physics_content(tmp_path: Path, layout: str) -> None:
    summary = _make(tmp_path, layout)
    with uproot.open(summary.path) as f:
        events = f["Events"].arrays()
        assert f["hist_muon_pt"].values().sum() == ak.sum(events["nMuon"])
        assert f["cutflow"].values()[0] == N_EVENTS
    for name, mean, eta_max in [
        ("Muon", 1.5, 2.4),
        ("Electron", 1.2, 2.5),
        ("Jet", 5.0, 4.7),
        ("Photon", 1.0, 2.5),
    ]:
        counts = events[f"n{name}"]
        assert abs(ak.mean(counts) - mean) < 0.1
        pt = events[f"{name}_pt"]
        # NanoAOD sorts every collection by descending pt.
        assert ak.all(pt[:, :-1] >= pt[:, 1:])
        assert ak.all(abs(events[f"{name}_eta"]) < eta_max)
        phi = events[f"{name}_phi"]
        assert ak.all((phi >= -np.pi) & (phi < np.pi))
        assert ak.all(ak.num(events[f"{name}_mass"]) == counts)
    assert ak.all(events["Muon_charge"] ** 2 == 1)
    assert str(events["Muon_charge"].type.content) == "var * int32"
    assert str(events["Muon_tightId"].type.content) == "var * bool"
    assert ak.all(events["Photon_mass"] == 0)
    assert ak.all(events["Jet_mass"] > 0)
    assert events["HLT_IsoMu24"].to_numpy().dtype == np.bool_
    assert events["PV_npvs"].to_numpy().dtype == np.int32


def test_ttree_baskets(tmp_path: Path) -> None:
    summary = _make(tmp_path, "ttree")
    with uproot.open(summary.path) as f:
        tree = f["Events"]
        for name in ("Muon_pt", "nMuon", "Jet_btagDeepB", "event"):
            branch = tree[name]
            assert branch.num_baskets == N_EVENTS // BASKET
            for i in range(branch.num_baskets):
                start, stop = branch.basket_entry_start_stop(i)
                assert (start, stop) == (i * BASKET, (i + 1) * BASKET)


def test_rntuple_clusters(tmp_path: Path) -> None:
    summary = _make(tmp_path, "rntuple")
    with uproot.open(summary.path) as f:
        assert len(f["Events"].cluster_summaries) == N_EVENTS // BASKET


def test_uneven_last_chunk_and_empty(tmp_path: Path) -> None:
    s = generate(tmp_path / "odd.root", 12_345, basket_entries=5_000, histograms=False)
    with uproot.open(s.path) as f:
        branch = f["Events"]["Muon_pt"]
        assert branch.num_baskets == 3
        assert branch.basket_entry_start_stop(2) == (10_000, 12_345)
        assert "hist_muon_pt" not in f
    s = generate(tmp_path / "empty.root", 0)
    with uproot.open(s.path) as f:
        assert f["Events"].num_entries == 0


def test_deterministic(tmp_path: Path) -> None:
    def read(path: str) -> ak.Array:
        with uproot.open(path) as f:
            return f["Events"].arrays(["event", "Muon_pt", "Jet_eta", "MET_pt"])

    a = read(generate(tmp_path / "a.root", 12_000, seed=7, basket_entries=BASKET).path)
    b = read(generate(tmp_path / "b.root", 12_000, seed=7, basket_entries=BASKET).path)
    c = read(generate(tmp_path / "c.root", 12_000, seed=8, basket_entries=BASKET).path)
    assert ak.to_list(a) == ak.to_list(b)
    assert not ak.all(a["MET_pt"] == c["MET_pt"])
    # Same values regardless of layout.
    r = read(
        generate(tmp_path / "r.root", 12_000, seed=7, basket_entries=BASKET, layout="rntuple").path
    )
    assert ak.to_list(a) == ak.to_list(r)


@pytest.mark.parametrize(
    "codec, level, expected",
    [
        ("ZLIB", None, 101),
        ("LZ4", None, 404),
        ("ZSTD", None, 505),
        ("LZMA", None, 207),
        ("ZSTD", 3, 503),
        ("NONE", None, 100),
    ],
)
def test_compression_setting(tmp_path: Path, codec: str, level: int | None, expected: int) -> None:
    s = generate(tmp_path / "c.root", 100, codec=codec, level=level, histograms=False)
    with uproot.open(s.path) as f:
        # uproot spells "uncompressed" as ZLIB level 0 (100), like ROOT accepts.
        assert f.file.fCompress == expected
        branch = f["Events"]["run"]  # constant, so every codec shrinks it
        assert (branch.compressed_bytes == branch.uncompressed_bytes) == (expected % 100 == 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"codec": "BROTLI"}, "ZLIB, LZ4, ZSTD, LZMA, NONE"),
        ({"layout": "parquet"}, "ttree, rntuple"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(tmp_path / "bad.root", 10, **kwargs)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_crash_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_chunk, calls = gen._chunk, []

    def failing_chunk(*args: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real_chunk(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(gen, "_chunk", failing_chunk)
    with pytest.raises(RuntimeError, match="boom"):
        generate(tmp_path / "crash.root", 10_000, basket_entries=1_000)
    assert not list(tmp_path.iterdir())

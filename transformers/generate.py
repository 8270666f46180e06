"""Generate synthetic CMS NanoAOD-like ROOT files for tests and benchmarks.

Floats carry NanoAOD's reduced precision (see ``_nano_precision``), so files
compress like real ones. Each chunk of ``basket_entries`` events gets its own RNG derived from
``(seed, chunk_index)`` and is written with one ``extend`` call, so memory stays
bounded for any ``n_events`` and every TTree branch gets one basket per chunk.
Output is deterministic for a given ``(seed, basket_entries)``; changing the
chunk size changes the values.

Layouts:

* ``"ttree"``: NanoAOD-style branches (``run``, ``nMuon``, ``Muon_pt``, ...).
  Counters are written by uproot as int32 (NanoAOD uses uint32).
* ``"rntuple"``: the same names and dtypes as top-level fields, each collection
  member a separate ``var * T`` field.  Differences from the TTree: every jagged
  field carries its own offset column (uproot cannot share one between fields,
  short of nesting them under a ``Muon`` record field, which would lose the
  ``Muon_pt`` names), and each ``extend`` becomes one cluster with a single
  page per column (uproot 5.7 does not split pages).
  Compression is the file-level codec/level, applied to every page.

Default levels when ``level`` is None are ROOT's presets: ZLIB 1 (compiled default
101), LZ4 4 (kUseAnalysis 404), ZSTD 5 (kUseGeneralPurpose 505), LZMA 7
(kUseSmallest 207; expect ~1 MB/s).  Histograms (``hist_muon_pt``, ``hist_met``,
``cutflow``, TH1D) are written at top level for both layouts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import uproot

CODECS = ("ZLIB", "LZ4", "ZSTD", "LZMA", "NONE")
LAYOUTS = ("ttree", "rntuple")
DEFAULT_LEVELS = {"ZLIB": 1, "LZ4": 4, "ZSTD": 5, "LZMA": 7}

Array = npt.NDArray[Any]
Collections = dict[str, tuple[Array, dict[str, Array]]]

MUON_PT_BINS = np.linspace(0.0, 200.0, 101)
MET_BINS = np.linspace(0.0, 300.0, 101)
CHARGES = np.array([-1, 1], dtype=np.int32)
CUTFLOW_LABELS = ("all", ">=1 muon", "HLT_IsoMu24", ">=2 jets", "MET>30")


@dataclass(frozen=True)
class GenerateSummary:
    path: str
    layout: str
    codec: str
    n_events: int
    n_branches: int
    n_bytes: int
    seconds: float


def _f32(x: Array) -> Array:
    return np.asarray(x, dtype=np.float32)


def _nano_precision(name: str, x: Array) -> Array:
    """Round float32 mantissas as NanoAOD stores them (12 bits for angles, 10 for most
    else), so files compress like real ones instead of like random noise."""
    if x.dtype != np.float32 or name in ("pt", "genWeight"):
        return x
    drop = 23 - (12 if name in ("eta", "phi") or name.endswith(("_eta", "_phi")) else 10)
    # Truncation (toward zero) keeps every value inside its range, e.g. |phi| <= pi.
    mask = np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return (np.ascontiguousarray(x).view(np.uint32) & mask).view(np.float32)


def _eta(rng: np.random.Generator, n: int, sigma: float, lim: float) -> Array:
    # Gaussian core like real detector acceptance; out-of-range tails are
    # redrawn flat instead of clipped so no spike piles up at the edge.
    eta = rng.normal(0.0, sigma, n)
    bad = np.abs(eta) >= lim
    eta[bad] = rng.uniform(-lim, lim, int(bad.sum()))
    return _f32(eta)


def _phi(rng: np.random.Generator, n: int) -> Array:
    # Rounding to float32 can turn values just below pi into float32(pi) > pi.
    phi = _f32(rng.uniform(-np.pi, np.pi, n))
    return np.minimum(phi, np.nextafter(np.float32(np.pi), np.float32(0)))


def _sorted_pt(counts: Array, pt: Array) -> Array:
    # NanoAOD orders each collection by descending pt; one flat lexsort keyed
    # on (event, -pt) avoids any per-event Python loop.
    parents = np.repeat(np.arange(len(counts)), counts)
    return _f32(pt[np.lexsort((-pt, parents))])


def _kinematics(
    rng: np.random.Generator, counts: Array, pt: Array, sigma: float, lim: float
) -> dict[str, Array]:
    n = int(counts.sum())
    return {"pt": _sorted_pt(counts, pt), "eta": _eta(rng, n, sigma, lim), "phi": _phi(rng, n)}


def _counts(rng: np.random.Generator, n: int, mean: float) -> tuple[Array, int]:
    c = rng.poisson(mean, n).astype(np.int32)
    return c, int(c.sum())


def _chunk(rng: np.random.Generator, start: int, n: int) -> tuple[dict[str, Array], Collections]:
    cols: Collections = {}

    c, k = _counts(rng, n, 1.5)
    mu = _kinematics(rng, c, 3.0 + rng.exponential(15.0, k), 1.2, 2.4)
    mu["mass"] = np.full(k, 0.10566, np.float32)
    mu["charge"] = rng.choice(CHARGES, k)
    mu["pfRelIso04_all"] = _f32(rng.exponential(0.15, k))
    mu["dxy"] = _f32(rng.normal(0.0, 0.005, k))
    mu["dz"] = _f32(rng.normal(0.0, 0.02, k))
    mu["sip3d"] = _f32(np.abs(rng.normal(0.0, 2.0, k)))
    mu["nTrackerLayers"] = rng.integers(6, 18, k, dtype=np.int32)
    mu["mediumId"] = rng.random(k) < 0.9
    mu["tightId"] = mu["mediumId"] & (rng.random(k) < 0.9)
    cols["Muon"] = (c, mu)

    c, k = _counts(rng, n, 1.2)
    el = _kinematics(rng, c, 5.0 + rng.exponential(15.0, k), 1.3, 2.5)
    el["mass"] = np.full(k, 0.000511, np.float32)
    el["charge"] = rng.choice(CHARGES, k)
    el["pfRelIso03_all"] = _f32(rng.exponential(0.12, k))
    el["dxy"] = _f32(rng.normal(0.0, 0.01, k))
    el["dz"] = _f32(rng.normal(0.0, 0.03, k))
    el["sip3d"] = _f32(np.abs(rng.normal(0.0, 2.5, k)))
    el["deltaEtaSC"] = _f32(rng.normal(0.0, 0.01, k))
    el["cutBased"] = rng.choice(np.arange(5, dtype=np.int32), k, p=[0.1, 0.15, 0.2, 0.25, 0.3])
    el["mvaIso_WP90"] = rng.random(k) < 0.8
    cols["Electron"] = (c, el)

    c, k = _counts(rng, n, 5.0)
    # Pareto tail gives the power-law falloff of the QCD jet spectrum.
    jet = _kinematics(rng, c, 15.0 * (1.0 + rng.pareto(3.0, k)), 2.0, 4.7)
    jet["mass"] = _f32(jet["pt"] * np.abs(rng.normal(0.12, 0.05, k)))
    jet["btagDeepB"] = _f32(rng.beta(0.5, 3.0, k))
    jet["btagDeepFlavB"] = _f32(rng.beta(0.5, 3.0, k))
    jet["jetId"] = rng.choice(np.array([0, 2, 6], dtype=np.int32), k, p=[0.05, 0.1, 0.85])
    jet["puId"] = rng.choice(np.array([0, 4, 6, 7], dtype=np.int32), k, p=[0.2, 0.1, 0.2, 0.5])
    jet["nConstituents"] = (5 + rng.poisson(20, k)).astype(np.int32)
    jet["area"] = _f32(rng.normal(0.5, 0.03, k))
    jet["chEmEF"] = _f32(rng.beta(1.0, 10.0, k))
    jet["neHEF"] = _f32(rng.beta(1.0, 6.0, k))
    jet["hadronFlavour"] = rng.choice(np.array([0, 4, 5], dtype=np.int32), k, p=[0.8, 0.1, 0.1])
    cols["Jet"] = (c, jet)

    c, k = _counts(rng, n, 1.0)
    ph = _kinematics(rng, c, 10.0 + rng.exponential(20.0, k), 1.3, 2.5)
    ph["mass"] = np.zeros(k, np.float32)
    ph["pfRelIsoAll"] = _f32(rng.exponential(0.2, k))
    ph["sieie"] = _f32(rng.normal(0.01, 0.002, k))
    ph["hoe"] = _f32(rng.exponential(0.03, k))
    ph["mvaID"] = _f32(rng.uniform(-1.0, 1.0, k))
    ph["cutBased"] = rng.integers(0, 4, k, dtype=np.int32)
    ph["electronVeto"] = rng.random(k) < 0.9
    cols["Photon"] = (c, ph)

    idx = np.arange(start, start + n, dtype=np.uint64)
    jet_ht = np.bincount(np.repeat(np.arange(n), cols["Jet"][0]), weights=jet["pt"], minlength=n)
    met = rng.gamma(2.0, 15.0, n)
    flat = {
        "run": (362_000 + idx // 5_000_000).astype(np.uint32),
        "luminosityBlock": (1 + (idx % 5_000_000) // 2_000).astype(np.uint32),
        "event": idx + np.uint64(1_000_000),
        "MET_pt": _f32(met),
        "MET_phi": _phi(rng, n),
        "MET_sumEt": _f32(jet_ht + rng.gamma(4.0, 100.0, n)),
        "PuppiMET_pt": _f32(met * rng.normal(0.9, 0.1, n).clip(0.1)),
        "PuppiMET_phi": _phi(rng, n),
        "PV_npvs": rng.poisson(30, n).astype(np.int32),
        "PV_npvsGood": rng.poisson(28, n).astype(np.int32),
        "PV_z": _f32(rng.normal(0.0, 3.5, n)),
        "genWeight": _f32(np.where(rng.random(n) < 0.02, -1.0, 1.0) * 1000.0),
        "Pileup_nTrueInt": _f32(rng.gamma(30.0, 1.0, n)),
        "HLT_IsoMu24": (cols["Muon"][0] > 0) & (rng.random(n) < 0.6),
        "HLT_Ele32_WPTight_Gsf": (cols["Electron"][0] > 0) & (rng.random(n) < 0.5),
        "HLT_PFJet500": rng.random(n) < 0.01,
        "HLT_Photon200": rng.random(n) < 0.005,
        "Flag_goodVertices": rng.random(n) < 0.999,
        "Flag_METFilters": rng.random(n) < 0.99,
    }
    return flat, cols


def _compression(codec: str, level: int | None) -> Any:
    if codec == "NONE":
        return None
    return getattr(uproot, codec)(DEFAULT_LEVELS[codec] if level is None else level)


def _columns(layout: str, flat: dict[str, Array], cols: Collections) -> dict[str, Any]:
    data: dict[str, Any] = dict(flat)
    for name, (counts, fields) in cols.items():
        if layout == "ttree":
            # uproot's TTree writer derives the NanoAOD names nX / X_field from this.
            data[name] = ak.unflatten(ak.zip(fields), counts)
        else:
            data[f"n{name}"] = counts
            data.update({f"{name}_{k}": ak.unflatten(v, counts) for k, v in fields.items()})
    return data


def _make_sink(f: Any, layout: str, name: str, data: dict[str, Any]) -> Any:
    # Create empty and fill only via extend, so the first chunk is not special.
    if layout == "ttree":
        types = {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in data.items()}
        return f.mktree(name, types)
    return f.mkrntuple(name, ak.zip(data, depth_limit=1).layout.form)


class _Histograms:
    def __init__(self) -> None:
        self.muon_pt = np.zeros(len(MUON_PT_BINS) - 1)
        self.met = np.zeros(len(MET_BINS) - 1)
        self.cutflow = np.zeros(len(CUTFLOW_LABELS))

    def fill(self, flat: dict[str, Array], cols: Collections) -> None:
        met = flat["MET_pt"]
        self.muon_pt += np.histogram(cols["Muon"][1]["pt"], MUON_PT_BINS)[0]
        self.met += np.histogram(met, MET_BINS)[0]
        # Cumulative selection, as a real analysis cutflow would be.
        sel = np.ones(len(met), dtype=bool)
        cuts = (cols["Muon"][0] > 0, flat["HLT_IsoMu24"], cols["Jet"][0] >= 2, met > 30)
        self.cutflow[0] += len(met)
        for j, cut in enumerate(cuts, start=1):
            sel &= cut
            self.cutflow[j] += sel.sum()

    def write(self, f: Any) -> None:
        f["hist_muon_pt"] = (self.muon_pt, MUON_PT_BINS)
        f["hist_met"] = (self.met, MET_BINS)
        f["cutflow"] = (self.cutflow, np.arange(len(CUTFLOW_LABELS) + 1, dtype=np.float64))


def generate(
    path: str | os.PathLike[str],
    n_events: int,
    *,
    layout: str = "ttree",
    codec: str = "ZSTD",
    level: int | None = None,
    seed: int = 0,
    basket_entries: int = 10_000,
    tree_name: str = "Events",
    histograms: bool = True,
) -> GenerateSummary:
    """Write ``n_events`` synthetic NanoAOD-like events to ``path``."""
    codec, layout = codec.upper(), layout.lower()
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if n_events < 0 or basket_entries < 1:
        raise ValueError("n_events must be >= 0 and basket_entries >= 1")

    t0 = time.perf_counter()
    final = os.fspath(path)
    tmp = final + ".tmp"
    hists = _Histograms()
    n_branches = 0
    try:
        with uproot.recreate(tmp, compression=_compression(codec, level)) as f:
            sink: Any = None
            # max(..., 1): n_events == 0 still runs one empty chunk to create the tree.
            for i, start in enumerate(range(0, max(n_events, 1), basket_entries)):
                # Per-chunk RNG: bounded memory and no dependence on earlier chunks.
                rng = np.random.default_rng([seed, i])
                flat, cols = _chunk(rng, start, min(basket_entries, n_events - start))
                flat = {k: _nano_precision(k, v) for k, v in flat.items()}
                cols = {c: (n, {k: _nano_precision(k, v) for k, v in fs.items()})
                        for c, (n, fs) in cols.items()}
                data = _columns(layout, flat, cols)
                if sink is None:
                    n_branches = len(flat) + sum(1 + len(v[1]) for v in cols.values())
                    sink = _make_sink(f, layout, tree_name, data)
                if n_events:
                    sink.extend(data)
                if histograms:
                    hists.fill(flat, cols)
            if histograms:
                hists.write(f)
        os.replace(tmp, final)
    except BaseException:
        # Never leave a half-written temp file behind to be mistaken for data.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    size = os.path.getsize(final)
    return GenerateSummary(
        final, layout, codec, n_events, n_branches, size, time.perf_counter() - t0
    )

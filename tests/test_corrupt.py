"""Corrupt, missing and forbidden inputs: a one-line permanent error, never a crash,
never a silently wrong result, and no output file left behind.

The corrupt files are made here, in ``tmp_path``, from the real ROOT files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

import transformers.source
from delivery.errors import DeliveryError, InputError, PermanentError, PolicyError
from delivery.policy import SourcePolicy
from delivery.selection.model import parse_selection
from transformers.run import TransformOptions, run_file, transform_file

HZZ_SELECTION = {"treename": "events", "filter_name": ["NMuon", "MET_px"]}


def assert_input_error(path: Path | str, out: Path, policy: SourcePolicy,
                       selection: Any = None, match: str | None = None) -> InputError:
    """The file fails with a one-line InputError and leaves no output at all."""
    sel = parse_selection(selection or HZZ_SELECTION)
    with pytest.raises(DeliveryError) as info:
        transform_file(str(path), sel, out, policy=policy, options=TransformOptions(numba=False))
    err = info.value
    assert isinstance(err, InputError), f"{type(err).__name__}: {err}"
    assert isinstance(err, PermanentError)
    text = str(err)
    assert text and "\n" not in text and "\r" not in text
    assert str(path) in text  # says which input
    if match is not None:
        assert match in text
    assert not out.exists() or list(out.iterdir()) == []  # no output, no .part file
    # run_file reports the same error instead of raising.
    res = run_file(str(path), sel, out, policy=policy, options=TransformOptions(numba=False))
    assert res.error == err.reason and res.permanent is True and res.output is None
    assert not out.exists() or list(out.iterdir()) == []
    return err


@pytest.fixture
def hzz(shared_data: Path) -> Path:
    return shared_data / "uproot-HZZ.root"


def test_random_bytes(tmp_path: Path, policy: SourcePolicy) -> None:
    path = tmp_path / "garbage.root"
    path.write_bytes(np.random.default_rng(12345).bytes(10 * 1024))
    assert_input_error(path, tmp_path / "out", policy, match="not a ROOT file")


def test_empty_file(tmp_path: Path, policy: SourcePolicy) -> None:
    path = tmp_path / "empty.root"
    path.write_bytes(b"")
    assert_input_error(path, tmp_path / "out", policy)


def test_truncated_file(hzz: Path, tmp_path: Path, policy: SourcePolicy) -> None:
    data = hzz.read_bytes()
    cut = int(len(data) * 0.6)
    # The selection reads branches whose baskets all lie beyond the cut, so reading them
    # cannot succeed even if the file's header and directory could be read.
    with uproot.open(hzz) as f:
        for name in HZZ_SELECTION["filter_name"]:
            branch = f["events"][name]
            seeks = branch.member("fBasketSeek")[: branch.num_baskets]
            assert all(int(s) > cut for s in seeks), name
    path = tmp_path / "truncated.root"
    path.write_bytes(data[:cut])
    assert_input_error(path, tmp_path / "out", policy)


def _compressed_basket(path: Path, data: bytes) -> tuple[str, int, int]:
    """(branch, file offset, length) of the compressed block of a basket really compressed."""
    with uproot.open(path) as f:
        tree = f["events"]
        for name in ("MET_px", "NMuon", "Muon_Px", "Jet_Px"):
            branch = tree[name]
            for i in range(branch.num_baskets):
                seek = int(branch.member("fBasketSeek")[i])
                key_length = int.from_bytes(data[seek + 14:seek + 16], "big")  # TKey fKeylen
                size = branch.basket_compressed_bytes(i)
                # A basket that did not shrink is stored raw (no codec, no checksum).
                if size < branch.basket_uncompressed_bytes(i):
                    return name, seek + key_length, size
    raise AssertionError(f"no compressed basket in {path}")


@pytest.mark.parametrize("codec,header", [
    ("", b"ZL"), ("-lz4", b"L4"), ("-zstd", b"ZS"), ("-lzma", b"XZ"),
])
@pytest.mark.parametrize("what", ["payload", "whole block"])
def test_zeroed_basket(shared_data: Path, tmp_path: Path, policy: SourcePolicy, codec: str,
                       header: bytes, what: str) -> None:
    src = shared_data / f"uproot-HZZ{codec}.root"
    data = bytearray(src.read_bytes())
    branch, start, size = _compressed_basket(src, bytes(data))
    assert bytes(data[start:start + 2]) == header  # ROOT's 9-byte compression header
    first = start + 9 if what == "payload" else start
    data[first:start + size] = bytes(start + size - first)
    path = tmp_path / f"zeroed{codec}.root"
    path.write_bytes(bytes(data))
    err = assert_input_error(path, tmp_path / "out", policy,
                             {"treename": "events", "filter_name": [branch]})
    assert "corrupt or unreadable data" in err.reason


def test_zeroed_basket_is_harmless_to_other_branches(hzz: Path, tmp_path: Path,
                                                     policy: SourcePolicy) -> None:
    """Only the damaged branch fails: a read of intact ones gives the right values."""
    data = bytearray(hzz.read_bytes())
    branch, start, size = _compressed_basket(hzz, bytes(data))
    assert branch == "MET_px"
    data[start + 9:start + size] = bytes(size - 9)
    path = tmp_path / "zeroed.root"
    path.write_bytes(bytes(data))
    res = transform_file(str(path), parse_selection({"treename": "events",
                                                     "filter_name": ["NMuon"]}),
                         tmp_path / "ok", policy=policy, options=TransformOptions(numba=False))
    with uproot.open(hzz) as f:
        expected = f["events"]["NMuon"].array(library="np")
    assert np.array_equal(pq.read_table(res.output)["NMuon"].to_numpy(), expected)


def test_nonexistent_path(tmp_path: Path, policy: SourcePolicy) -> None:
    assert_input_error(tmp_path / "no-such.root", tmp_path / "out", policy, match="no such file")


def test_directory_path(tmp_path: Path, policy: SourcePolicy) -> None:
    directory = tmp_path / "adir.root"
    directory.mkdir()
    assert_input_error(directory, tmp_path / "out", policy, match="is a directory")


# --- policy: refused before anything is opened --------------------------------------------------

@pytest.fixture
def nothing_opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records any attempt of the engine to open an input (and refuses it)."""
    calls: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError(f"uproot.open called with {args}")

    monkeypatch.setattr(transformers.source.uproot, "open", spy)
    return calls


def _refused(url: str | list[str], policy: SourcePolicy, out: Path) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        transform_file(url, parse_selection(HZZ_SELECTION), out, policy=policy,
                       options=TransformOptions(numba=False))
    assert isinstance(info.value, PermanentError)
    assert "\n" not in str(info.value)
    assert not out.exists()
    return info.value


def test_local_path_outside_the_allowed_roots(tmp_path: Path, shared_data: Path,
                                              nothing_opened: list[Any]) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "x.root").write_bytes((shared_data / "uproot-Zmumu.root").read_bytes())
    (allowed / "link.root").symlink_to(outside / "x.root")
    policy = SourcePolicy.create([allowed])
    out = tmp_path / "out"
    for url in (str(outside / "x.root"), f"file://{outside}/x.root",
                str(allowed / ".." / "outside" / "x.root"), str(allowed / "link.root"),
                str(shared_data / "uproot-Zmumu.root")):
        err = _refused(url, policy, out)
        assert "outside the allowed roots" in err.reason
    # One bad replica refuses the whole list, even after a good one.
    (allowed / "good.root").write_bytes(b"")
    _refused([str(allowed / "good.root"), str(outside / "x.root")], policy, out)
    assert nothing_opened == []


@pytest.mark.parametrize("url,words", [
    ("file:///etc/passwd", "outside the allowed roots"),
    ("memory://x", "scheme 'memory' is not allowed"),
    ("simplecache::file:///x", "chained URLs"),
    ("http://169.254.169.254/x", "link-local"),
    ("ftp://x/y", "scheme 'ftp' is not allowed"),
])
def test_forbidden_urls(url: str, words: str, policy: SourcePolicy, tmp_path: Path,
                        nothing_opened: list[Any]) -> None:
    err = _refused(url, policy, tmp_path / "out")
    assert words in err.reason
    assert nothing_opened == []
    res = run_file(url, parse_selection(HZZ_SELECTION), tmp_path / "out", policy=policy,
                   options=TransformOptions(numba=False))
    assert res.permanent is True and res.error == err.reason

"""The engine reads root://, http:// and s3:// inputs through real local servers."""

from __future__ import annotations

import shutil
from pathlib import Path

import awkward as ak
import pytest
import uproot
from servers import free_port, make_world_readable, served_url

from delivery.errors import InputError, TransientError
from delivery.policy import SourcePolicy
from delivery.selection import parse_selection
from transformers.run import TransformOptions, transform_file

pytestmark = pytest.mark.integration

SELECTION = parse_selection([{"treename": "events", "filter_name": ["NMuon", "Muon_Px", "MET_px"],
                              "cut": "any(Muon_Px > 10) and MET_px < 50"}])


@pytest.fixture(scope="module")
def expected(shared_data: Path) -> ak.Array:
    arrays = uproot.open(shared_data / "uproot-HZZ.root")["events"].arrays(
        ["NMuon", "Muon_Px", "MET_px"])
    keep = ak.any(arrays.Muon_Px > 10, axis=1) & (arrays.MET_px < 50)
    return arrays[keep]


def _run(url: str | list[str], out: Path, timeout: float = 30) -> ak.Array:
    policy = SourcePolicy.create([out])
    result = transform_file(url, SELECTION, out, policy=policy,
                            options=TransformOptions(open_timeout=timeout))
    assert result.output and result.bytes == Path(result.output).stat().st_size
    return ak.from_parquet(result.output)


def test_root_url_through_xrootd(xrootd_url_dir: tuple[str, Path], shared_data: Path,
                                 expected: ak.Array, tmp_path: Path) -> None:
    base, served = xrootd_url_dir
    target = served / "engine" / "hzz.root"
    target.parent.mkdir(exist_ok=True)
    shutil.copy(shared_data / "uproot-HZZ.root", target)
    make_world_readable(served)
    got = _run(served_url(base, served, target), tmp_path)
    assert ak.array_equal(got, expected)


def test_missing_file_over_xrootd_is_permanent(xrootd_url_dir: tuple[str, Path],
                                               tmp_path: Path) -> None:
    base, served = xrootd_url_dir
    with pytest.raises(InputError, match="3011|no such file"):
        _run(served_url(base, served, served / "nope.root"), tmp_path)


def test_https_style_url_with_ranges(http_url_dir: tuple[str, Path], shared_data: Path,
                                     expected: ak.Array, tmp_path: Path) -> None:
    base, served = http_url_dir
    shutil.copy(shared_data / "uproot-HZZ.root", served / "hzz.root")
    assert ak.array_equal(_run(base + "hzz.root", tmp_path), expected)
    with pytest.raises(InputError, match="404|not found|no such file"):
        _run(base + "missing.root", tmp_path)


def test_refused_connection_is_transient_and_replicas_move_on(
        http_url_dir: tuple[str, Path], shared_data: Path, expected: ak.Array,
        tmp_path: Path) -> None:
    base, served = http_url_dir
    shutil.copy(shared_data / "uproot-HZZ.root", served / "replica.root")
    dead = f"http://127.0.0.1:{free_port()}/replica.root"
    dead_xrd = f"root://127.0.0.1:{free_port()}//replica.root"
    for url in (dead, dead_xrd):
        with pytest.raises(TransientError, match="network error"):
            _run(url, tmp_path, timeout=3)
    assert ak.array_equal(_run([dead, dead_xrd, base + "replica.root"], tmp_path, timeout=3),
                          expected)


def test_s3_url(s3_endpoint: str, shared_data: Path, expected: ak.Array, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "reader", "AWS_SECRET_ACCESS_KEY": "secret",
                       "AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="physics")
    client.upload_file(str(shared_data / "uproot-HZZ.root"), "physics", "hzz.root")
    assert ak.array_equal(_run("s3://physics/hzz.root", tmp_path), expected)
    with pytest.raises(InputError, match="no such file"):
        _run("s3://physics/absent.root", tmp_path)

"""Input policy: local roots, schemes, hosts. Checked before anything is opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import delivery
from delivery.errors import PermanentError, PolicyError
from delivery.policy import SourcePolicy


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.root").write_bytes(b"x")
    (tmp_path / "secret").write_text("s")
    return tmp_path / "data"


def test_local_paths_inside_roots_resolve(root: Path) -> None:
    policy = SourcePolicy.create([root])
    assert policy.check(str(root / "f.root")) == str((root / "f.root").resolve())
    assert policy.check(f"file://{root}/f.root") == str((root / "f.root").resolve())


@pytest.mark.parametrize("make", [
    lambda r: str(r / ".." / "secret"),
    lambda r: f"file://{r}/../secret",
    lambda r: "/etc/passwd",
    lambda r: "file:///etc/passwd",
    lambda r: str(r) + "-sibling/f.root",
])
def test_escapes_from_the_roots_are_refused(root: Path, make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match="outside the allowed roots"):
        SourcePolicy.create([root]).check(make(root))


def test_symlink_out_of_the_root_is_refused(root: Path) -> None:
    os.symlink(root.parent / "secret", root / "link.root")
    with pytest.raises(PolicyError):
        SourcePolicy.create([root]).check(str(root / "link.root"))


@pytest.mark.parametrize("url, message", [
    ("memory://x.root", "scheme 'memory' is not allowed"),
    ("ftp://host/x.root", "scheme 'ftp' is not allowed"),
    ("simplecache::root://host//x.root", "chained URLs"),
    ("zip://a::file:///tmp/x.zip", "not allowed"),
    ("file:///tmp/x.root::memory://y", "chained URLs"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]/x.root", "link-local"),
    ("https:///x.root", "names no host"),
    ("", "not a usable path"),
    ("/tmp/\x00x", "not a usable path"),
])
def test_schemes_chains_and_hosts(url: str, message: str, root: Path) -> None:
    with pytest.raises(PolicyError, match=message):
        SourcePolicy.create([root]).check(url)


def test_remote_urls_and_host_allowlist(root: Path) -> None:
    open_policy = SourcePolicy.create([root])
    assert open_policy.check("root://eos.example.org//store/x.root")
    assert open_policy.check("http://[::1]:8080/x.root")
    closed = SourcePolicy.create([root], hosts=["eos.example.org"])
    assert closed.check("root://eos.example.org//store/x.root")
    with pytest.raises(PolicyError, match="not in the allowed hosts"):
        closed.check("https://other.example.org/x.root")


def test_no_roots_means_no_local_files(root: Path) -> None:
    with pytest.raises(PolicyError, match="no allowed roots"):
        SourcePolicy.create([]).check(str(root / "f.root"))


def test_environment_configuration(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_ALLOWED_ROOTS", str(root))
    monkeypatch.setenv("DELIVERY_ALLOWED_SCHEMES", "file,root")
    policy = SourcePolicy.from_env()
    assert policy.check(str(root / "f.root"))
    with pytest.raises(PolicyError, match="scheme 'https'"):
        policy.check("https://host/x.root")
    assert issubclass(PolicyError, PermanentError)


def test_public_api_is_pinned() -> None:
    assert sorted(delivery.__all__) == sorted([
        "Client", "Delivery", "DeliveryError", "DeliveryFailed", "InputError",
        "PermanentError", "PolicyError", "Query", "Selection", "SelectionError",
        "ServerRefused", "TransientError", "__version__", "deliver", "parse_selection",
    ])
    for name in delivery.__all__:
        assert getattr(delivery, name) is not None

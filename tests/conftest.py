"""Shared fixtures: the real ROOT files in ``shared/data/root`` and an input policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from delivery.policy import SourcePolicy

# The files are used in place; never copy them into the repository.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "root"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory of real ROOT files: skipped if absent, but a failure when CI=true."""
    if not SHARED_DATA.is_dir():
        reason = f"real ROOT test files not found in {SHARED_DATA}"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{reason} (CI=true: missing test data is a failure, not a skip)",
                        pytrace=False)
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture
def policy(tmp_path: Path) -> SourcePolicy:
    """Local files under ``tmp_path`` and the shared data directory (if present) only."""
    roots: list[Path] = [tmp_path]
    if SHARED_DATA.is_dir():
        roots.append(SHARED_DATA)
    return SourcePolicy.create(roots)


# The real-server fixtures (XRootD, HTTP with ranges, S3) live in their own module.
from conftest_servers import http_url_dir, s3_endpoint, xrootd_url_dir  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _private_client_cache(tmp_path_factory: pytest.TempPathFactory,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the user's own client cache."""
    monkeypatch.setenv("DELIVERY_CACHE", str(tmp_path_factory.mktemp("client-cache")))

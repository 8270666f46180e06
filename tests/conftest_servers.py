"""Session-scoped pytest fixtures for the real local servers in ``tests/servers.py``.

Enable them from ``tests/conftest.py`` with ``pytest_plugins = ["conftest_servers"]``
(or from a test module the same way).

Both fixtures return ``(base_url, served_dir)``. The directory starts empty and
is shared by the whole session: put files in a per-test subdirectory and build
URLs with ``servers.served_url(base_url, served_dir, path)``:

* ``xrootd_url_dir``: ``("root://127.0.0.1:PORT/", Path("/tmp/xrootd-served-..."))``;
  file URLs are ``root://127.0.0.1:PORT//tmp/xrootd-served-.../f.root`` (absolute
  path, double slash). Files must be world-readable (xrootd runs as user
  ``xrootd``): call ``servers.make_world_readable(served_dir)`` after copying.
* ``http_url_dir``: ``("http://127.0.0.1:PORT/", Path(...))``; file URLs are
  relative to the served directory.

A missing ``xrootd`` binary skips the test, or fails it when ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import http_range_server, require_service, s3_server, served_tempdir, xrootd_server


@pytest.fixture(scope="session")
def xrootd_url_dir() -> Iterator[tuple[str, Path]]:
    """``(base_url, served_dir)`` of a running read-only XRootD server."""
    require_service("xrootd", "xrootd server not installed (Debian package xrootd-server)")
    with served_tempdir(prefix="xrootd-served-") as served, xrootd_server(served) as base_url:
        yield base_url, served


@pytest.fixture(scope="session")
def http_url_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``(base_url, served_dir)`` of a running HTTP server with byte-range support."""
    served = tmp_path_factory.mktemp("http-served")
    with http_range_server(served) as base_url:
        yield base_url, served


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a running S3 server (credentials: any key and secret)."""
    with s3_server() as endpoint:
        yield endpoint

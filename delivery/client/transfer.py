"""One output file from the service to local disk, verified before it is visible.

Contract (:func:`download`):

- The file is asked of our API (``/api/v1/requests/<id>/files/<n>/download``,
  with the client's credentials). The API either streams it itself (a local
  result store) or redirects to a short-lived presigned object-store URL.
- A presigned URL is fetched with the standard library (``http.client``):
  ``readinto`` a reused buffer, straight from the socket, hashing and writing
  each block as it arrives. bench/bench_client.py measured this at ~1/5 of the
  CPU of streaming the same bytes through httpx (h11 copies every block several
  times), which matters on a laptop that is loading the previous files at the
  same time. No credential goes with it (the URL carries its own signature).
  Anything unusual (a proxy in the environment, a further redirect, a
  content-encoding) goes through httpx instead, without our credentials.
- Bytes go to a hidden ``.part`` file in ``dest_dir``, SHA-256 computed while
  they stream; the size must equal ``total-bytes`` and the hash the server's
  ``sha256``, then the file is renamed into place: a partial or altered file
  is never visible under its final name. A failed attempt is retried
  (``attempts`` in all) and finally raises :class:`TruncatedDownload` or
  :class:`~delivery.errors.TransientError`; a 4xx answer is a
  :class:`~delivery.client.http.ServerRefused` at once.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import ssl
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx

from delivery.client.http import Http, ServerRefused, raise_for
from delivery.errors import TransientError

__all__ = ["TruncatedDownload", "download", "verify_size"]

BLOCK = 1 << 20  # bytes per read


class TruncatedDownload(TransientError):
    """A downloaded file is not as long as the server said, or not the bytes it said."""


def verify_size(path: Path, expected: int) -> None:
    """Raise :class:`TruncatedDownload` unless ``path`` holds exactly ``expected`` bytes."""
    size = path.stat().st_size
    if size != expected:
        raise TruncatedDownload(f"{path.name}: got {size} bytes, expected {expected}")


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # the trust store httpx would use


def _proxied(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(
        host)


def _direct(url: str, out: BinaryIO, digest: Any, timeout: float) -> bool:
    """Fetch ``url`` into ``out`` with ``http.client``; False (nothing written) if it
    is a case for httpx."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or _proxied(parts.scheme, host):
        return False
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=_tls())
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    what = f"GET {parts.scheme}://{parts.netloc}{parts.path}"  # never the signature
    try:
        target = parts.path or "/"
        conn.request("GET", f"{target}?{parts.query}" if parts.query else target,
                     headers={"Accept-Encoding": "identity"})
        response = conn.getresponse()
        encoding = (response.getheader("Content-Encoding") or "identity").lower()
        if 300 <= response.status < 400 or encoding != "identity":
            return False
        if response.status >= 400:
            text = response.read(300).decode(errors="replace").strip()
            reason = f"{what}: HTTP {response.status}: {text[:200] or response.reason}"
            if response.status < 500:
                raise ServerRefused(reason, status=response.status)
            raise TransientError(reason)
        view = memoryview(bytearray(BLOCK))
        while n := response.readinto(view):
            digest.update(view[:n])  # hashlib releases the GIL on large blocks
            out.write(view[:n])
        return True
    except (OSError, http.client.HTTPException) as err:
        raise TransientError(f"{what}: {type(err).__name__}: {err}") from None
    finally:
        conn.close()


def _copy(response: httpx.Response, out: BinaryIO, digest: Any) -> None:
    for chunk in response.iter_bytes(BLOCK):
        digest.update(chunk)
        out.write(chunk)


def _fetch(http: Http, path: str, out: BinaryIO, digest: Any) -> None:
    with http.stream(path, follow_redirects=False) as response:
        if not response.is_redirect:
            _copy(response, out, digest)  # our API streams it (a local result store)
            return
        location = urljoin(str(response.url), response.headers["location"])
    if _direct(location, out, digest, http.timeout):
        return
    what = f"GET {urlsplit(location).netloc}"
    try:  # a plain client: our credentials stay with our server
        with httpx.stream("GET", location, follow_redirects=True,
                          timeout=httpx.Timeout(http.timeout)) as response:
            raise_for(response, what)
            _copy(response, out, digest)
    except httpx.TransportError as err:
        raise TransientError(f"{what}: {type(err).__name__}: {err}") from None


def download(http: Http, request_id: str, item: Mapping[str, Any], dest_dir: str | Path, *,
             attempts: int = 3) -> Path:
    """Download one successful result into ``dest_dir``; its final path (see the contract)."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    file_id = item["file-id"]
    name = Path(str(item.get("s3-object-name") or "")).name
    if name in ("", ".", "..") or name.startswith("."):
        name = f"file-{file_id}"
    final = dest_dir / name
    expected = int(item["total-bytes"])
    expected_sha = item.get("sha256")  # an older server recorded none: the size still counts
    path = f"/api/v1/requests/{request_id}/files/{file_id}/download"
    error: TransientError | None = None
    for n in range(attempts):
        if n:
            time.sleep(http.backoff * 2 ** (n - 1))
        part = dest_dir / f".{name}.{uuid.uuid4().hex[:8]}.part"
        digest = hashlib.sha256()
        try:
            with part.open("wb") as out:
                _fetch(http, path, out, digest)
            verify_size(part, expected)
            if expected_sha and digest.hexdigest() != expected_sha:
                raise TruncatedDownload(f"{name}: content differs from the server's checksum")
            os.replace(part, final)
            return final
        except TransientError as err:
            error = err
        finally:
            part.unlink(missing_ok=True)
    assert error is not None
    raise type(error)(f"download of file {file_id} of {request_id} failed after "
                      f"{attempts} attempts: {error.reason}")

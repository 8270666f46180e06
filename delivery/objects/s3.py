"""A result store on an S3 endpoint (MinIO in production), through the ``minio`` SDK.

Two credential pairs, two jobs:

- the **write** pair (``access_key``/``secret_key``) is what the workers upload,
  list and delete with; it never leaves this process;
- the **read** pair (``read_access_key``/``read_secret_key``) is the only one
  :meth:`S3Store.client_fields` hands to ServiceX clients. Without a read pair
  those fields carry empty keys, never the write pair: the ServiceX client then
  cannot download (it has no credential), while our own client keeps working
  through :meth:`S3Store.download_url` or the API.

:meth:`S3Store.download_url` signs with the read pair when there is one, else
with the write pair: a presigned URL grants GET on one object until it expires
and carries the access key *id* and a signature, never a secret. It is valid for
GET (with or without ``Range``) only; a HEAD needs its own signature and is
refused by S3 and MinIO, so learn the size from :meth:`S3Store.size` or from the
``Content-Range`` of a ``Range: bytes=0-0`` GET.

Failures of the endpoint (refused or timed-out connections, 5xx, throttling, and
also 4xx such as AccessDenied: a misconfigured store is the deployment's trouble,
not the user's file) raise :class:`~delivery.errors.TransientError` with one line
that names the endpoint and the operation. The HTTP pool is tuned for a service:
5 s to connect, 60 s per read, at most three retries with short backoff, so an
outage surfaces in seconds (a refused connection in about one), not minutes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError

from delivery.errors import TransientError
from delivery.objects import check_bucket, check_key
from delivery.objects.base import ObjectInfo, ObjectStore

__all__ = ["S3Store", "make_http_client"]

MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB  # multipart above this; up to ~4 parts in memory per upload
_MAX_PARTS = 10_000
_MAX_EXPIRY = 7 * 24 * 3600  # SigV4's limit for presigned URLs
_MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound")
# urllib3 prefixes connection errors with "<...Connection object at 0x...>: " or
# "HTTPConnection(host='h', port=p): "; the endpoint is in our message already.
_NOISE = re.compile(r"<[^>]* object at 0x[0-9a-f]+>:?\s*|\w*Connection\(host=[^)]*\):\s*")


def make_http_client(
    *, connect: float = 5.0, read: float = 60.0, retries: int = 3, cert_check: bool = True
) -> urllib3.PoolManager:
    """The urllib3 pool for :class:`Minio`: short time-outs, few quick retries.

    Retries cover refused connections, time-outs and 500/502/503/504 on
    idempotent requests, with 0-1 s backoff; then the error surfaces.
    """
    import certifi

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect, read=read),
        maxsize=10,
        cert_reqs="CERT_REQUIRED" if cert_check else "CERT_NONE",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=retries,
            connect=retries,
            read=1,  # a read time-out already cost `read` seconds
            backoff_factor=0.25,  # sleeps 0, 0.5, 1 s
            status_forcelist=(500, 502, 503, 504),
        ),
    )


def _describe(exc: BaseException) -> str:
    """A short reason for a client or network error, without object addresses."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}" if exc.message else str(exc.code)
    if isinstance(exc, ServerError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    text = _NOISE.sub("", str(exc)) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class S3Store(ObjectStore):
    """Buckets and objects on an S3 endpoint given as ``host:port`` (no scheme)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        secure: bool = False,
        read_access_key: str | None = None,
        read_secret_key: str | None = None,
        region: str = "us-east-1",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        http_client: urllib3.PoolManager | None = None,
    ) -> None:
        if "://" in endpoint or "/" in endpoint or not endpoint:
            raise ValueError(
                f"S3 endpoint must be host:port without scheme or path, got {endpoint!r} "
                "(https is chosen by the 'secure' setting)"
            )
        if bool(read_access_key) != bool(read_secret_key):
            raise ValueError("give both the read-only access key and its secret, or neither")
        if part_size < 5 * MiB:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.endpoint = endpoint
        self.secure = bool(secure)
        self.region = region
        self.part_size = part_size
        self._read_pair = (read_access_key, read_secret_key) if read_access_key else None
        http = http_client or make_http_client()
        # region is fixed, so the SDK never asks the server where a bucket lives.
        self._client = Minio(endpoint, access_key=access_key or None, secret_key=secret_key,
                             secure=self.secure, region=region, http_client=http)
        if self._read_pair is not None:
            self._signer = Minio(endpoint, access_key=self._read_pair[0],
                                 secret_key=self._read_pair[1], secure=self.secure,
                                 region=region, http_client=http)
        else:
            self._signer = self._client

    def __repr__(self) -> str:  # no credentials
        scheme = "https" if self.secure else "http"
        return f"S3Store({scheme}://{self.endpoint})"

    @contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """Turn SDK and network errors into one-line TransientErrors."""
        try:
            yield
        except (MinioException, Urllib3Error, OSError) as exc:
            raise TransientError(
                f"S3 store {self.endpoint}: {what} failed: {_describe(exc)}"
            ) from exc

    # -- uploads -------------------------------------------------------------

    def _part_size(self, size: int) -> int:
        needed = math.ceil(math.ceil(size / _MAX_PARTS) / MiB) * MiB
        return max(self.part_size, needed)

    def _upload(self, bucket: str, key: str, source: Path, size: int) -> None:
        self._client.fput_object(bucket, key, str(source), part_size=self._part_size(size),
                                 content_type="application/octet-stream")

    def _ensure_bucket(self, bucket: str) -> None:
        try:
            self._client.make_bucket(bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put_file(self, bucket: str, key: str, path: Path) -> int:
        check_bucket(bucket)
        check_key(key)
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no file to upload at {source}")
        expected = source.stat().st_size
        with self._failures(f"upload of {bucket}/{key}"):
            try:
                self._upload(bucket, key, source, expected)
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                # First file of a request: create its bucket (racing workers tolerated).
                self._ensure_bucket(bucket)
                self._upload(bucket, key, source, expected)
            stored = self._client.stat_object(bucket, key).size
        if stored != expected:
            with self._failures(f"removal of the short object {bucket}/{key}"):
                self._client.remove_object(bucket, key)
            raise TransientError(
                f"S3 store {self.endpoint}: {bucket}/{key} holds {stored} bytes after "
                f"uploading {expected}; removed it"
            )
        return int(stored or 0)

    def copy_object(self, src_bucket: str, key: str, dst_bucket: str) -> int:
        from minio.commonconfig import CopySource

        for name in (src_bucket, dst_bucket):
            check_bucket(name)
        check_key(key)
        with self._failures(f"copy of {src_bucket}/{key} to {dst_bucket}"):
            self._ensure_bucket(dst_bucket)
            self._client.copy_object(dst_bucket, key, CopySource(src_bucket, key))
            return int(self._client.stat_object(dst_bucket, key).size or 0)

    # -- queries -------------------------------------------------------------

    def size(self, bucket: str, key: str) -> int | None:
        check_bucket(bucket)
        check_key(key)
        with self._failures(f"size of {bucket}/{key}"):
            try:
                return int(self._client.stat_object(bucket, key).size or 0)
            except S3Error as exc:
                if exc.code in _MISSING:
                    return None
                raise

    def list(self, bucket: str) -> list[ObjectInfo]:
        check_bucket(bucket)
        with self._failures(f"listing of {bucket}"):
            try:
                return sorted(
                    ObjectInfo((str(obj.object_name), int(obj.size or 0)))
                    for obj in self._client.list_objects(bucket, recursive=True)
                    if obj.object_name and not obj.is_dir
                )
            except S3Error as exc:
                if exc.code in _MISSING:
                    return []
                raise

    # -- deletion ------------------------------------------------------------

    def delete_bucket(self, bucket: str) -> None:
        check_bucket(bucket)
        with self._failures(f"deletion of {bucket}"):
            for _attempt in range(3):  # an upload racing with us may add an object
                try:
                    names = [obj.object_name for obj in
                             self._client.list_objects(bucket, recursive=True)
                             if obj.object_name]
                    if names:
                        errors = list(self._client.remove_objects(
                            bucket, (DeleteObject(name) for name in names)))
                        if errors:
                            first = errors[0]
                            raise TransientError(
                                f"S3 store {self.endpoint}: deletion of {bucket} failed: "
                                f"{len(errors)} objects not removed, e.g. {first.name}: "
                                f"{first.code}"
                            )
                    self._client.remove_bucket(bucket)
                    return
                except S3Error as exc:
                    if exc.code in _MISSING:
                        return
                    if exc.code != "BucketNotEmpty":
                        raise
            raise TransientError(
                f"S3 store {self.endpoint}: deletion of {bucket} failed: objects keep "
                "appearing (uploads still running?)"
            )

    # -- client access -------------------------------------------------------

    def download_url(self, bucket: str, key: str, expires_seconds: int = 600) -> str | None:
        """A presigned GET URL, signed with the read pair if configured, else the write pair.

        GET only (``Range`` allowed): HEAD is refused by S3 and MinIO.
        """
        check_bucket(bucket)
        check_key(key)
        if not 1 <= expires_seconds <= _MAX_EXPIRY:
            raise ValueError(f"expires_seconds must be 1..{_MAX_EXPIRY}, got {expires_seconds}")
        with self._failures(f"signing a URL for {bucket}/{key}"):
            return self._signer.presigned_get_object(
                bucket, key, expires=timedelta(seconds=expires_seconds))

    def local_path(self, bucket: str, key: str) -> Path | None:
        """None: S3 objects are not files here (names are still checked, like everywhere)."""
        check_bucket(bucket)
        check_key(key)
        return None

    def client_fields(self) -> dict[str, Any]:
        """The ``minio-*`` status fields: the read pair, or empty keys, never the write pair."""
        access, secret = self._read_pair or ("", "")
        return {
            "minio-endpoint": self.endpoint,
            "minio-secured": self.secure,
            "minio-access-key": access,
            "minio-secret-key": secret,
        }

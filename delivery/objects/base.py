"""The result-store seam: one bucket per request, flat keys, exact sizes.

Contract, the same for every backend:

- Buckets are named by the request id; keys are flat (no ``/``) and end in
  ``.parquet``, ``.arrow`` or ``.root``. Every method checks names with
  :func:`delivery.objects.check_bucket` / :func:`~delivery.objects.check_key`
  and raises ValueError for others (``..``, ``/``, NUL, ...).
- :meth:`ObjectStore.put_file` uploads a finished local file and returns the
  size of the stored object as the store reports it afterwards; a failure
  raises :class:`~delivery.errors.TransientError` and leaves no object that
  looks complete. Uploading the same key twice leaves one complete object.
- :meth:`ObjectStore.size` is None and :meth:`ObjectStore.list` is empty for a
  missing object or bucket.
- :meth:`ObjectStore.delete_bucket` removes every object and the bucket; it is
  idempotent.
- :meth:`ObjectStore.download_url` is a short-lived URL for one object that needs
  no credentials (S3: presigned GET), or None when the API must stream it
  (local store: :meth:`ObjectStore.local_path`). A presigned URL is valid for
  GET, ranged or not, but not for HEAD (S3 and MinIO sign the method): take the
  size from :meth:`ObjectStore.size`.
- :meth:`ObjectStore.client_fields` gives the ``minio-*`` fields of the ServiceX
  status object: read-only credentials only, never the write or root key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

__all__ = ["ObjectStore", "ObjectInfo"]


class ObjectInfo(tuple[str, int]):
    """(key, size in bytes)."""

    __slots__ = ()

    @property
    def key(self) -> str:
        return self[0]

    @property
    def size(self) -> int:
        return self[1]


class ObjectStore(ABC):
    @abstractmethod
    def put_file(self, bucket: str, key: str, path: Path) -> int: ...

    @abstractmethod
    def size(self, bucket: str, key: str) -> int | None:
        """Size of the object, or None if absent."""

    @abstractmethod
    def list(self, bucket: str) -> list[ObjectInfo]: ...

    @abstractmethod
    def delete_bucket(self, bucket: str) -> None: ...

    @abstractmethod
    def download_url(self, bucket: str, key: str, expires_seconds: int = 600) -> str | None: ...

    @abstractmethod
    def copy_object(self, src_bucket: str, key: str, dst_bucket: str) -> int:
        """Copy one object into another bucket (created if needed), server-side where the
        store can; returns the stored size. Used to serve a request from a cached one."""

    def local_path(self, bucket: str, key: str) -> Path | None:
        """The file behind an object, for stores on this machine's disk."""
        return None

    @abstractmethod
    def client_fields(self) -> dict[str, Any]:
        """``minio-endpoint``, ``minio-secured``, ``minio-access-key``, ``minio-secret-key``."""

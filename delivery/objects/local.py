"""A result store in a directory on this machine: the embedded default.

Layout: ``root/<bucket>/<key>``, one directory per request. Uploads are copied
to a temporary name (``.put~<random>.tmp``) in the bucket directory, flushed to
disk, then renamed over the key with :func:`os.replace`, which is atomic: a
reader sees the old object, the new one, or none, never a partial file. ``~``
is not allowed in keys, so temporary names never collide with objects and
:meth:`LocalStore.list` never shows them. Deleting a bucket first renames its
directory to ``root/.trash~...`` (again no valid bucket name), then removes it.

There is no URL to hand out: :meth:`LocalStore.download_url` is None and the API
streams :meth:`LocalStore.local_path` itself. :meth:`LocalStore.client_fields`
keeps every ``minio-*`` field present (the ServiceX client needs the keys to
parse the status) but empty: there is no S3 endpoint and no credential to give.
The ServiceX client therefore cannot download from a local store (it fails at
its download step with an invalid endpoint); our own client streams through the
API. Deployments that serve ServiceX clients configure an S3 endpoint.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any

from delivery.errors import TransientError
from delivery.objects import check_bucket, check_key
from delivery.objects.base import ObjectInfo, ObjectStore

__all__ = ["LocalStore"]

_COPY_CHUNK = 1 << 20


class LocalStore(ObjectStore):
    """Objects as files under ``root``: ``root/<bucket>/<key>``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _bucket_dir(self, bucket: str) -> Path:
        return self.root / check_bucket(bucket)

    def _object_path(self, bucket: str, key: str) -> Path:
        return self._bucket_dir(bucket) / check_key(key)

    def put_file(self, bucket: str, key: str, path: Path) -> int:
        target = self._object_path(bucket, key)
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no file to upload at {source}")
        tmp = target.with_name(f".put~{secrets.token_hex(8)}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: never write through someone else's file; mode 0o666 & ~umask.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())  # the data is on disk before the name says it is
            os.replace(tmp, target)
            return target.stat().st_size
        except OSError as exc:
            raise TransientError(
                f"could not store {bucket}/{key} in {self.root}: {exc.strerror or exc}"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def copy_object(self, src_bucket: str, key: str, dst_bucket: str) -> int:
        source = self._object_path(src_bucket, key)
        if not source.is_file():
            raise FileNotFoundError(f"no object {src_bucket}/{key}")
        return self.put_file(dst_bucket, key, source)

    def size(self, bucket: str, key: str) -> int | None:
        target = self._object_path(bucket, key)
        try:
            st = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise TransientError(f"could not stat {bucket}/{key} in {self.root}: {exc}") from exc
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def list(self, bucket: str) -> list[ObjectInfo]:
        directory = self._bucket_dir(bucket)
        found: list[ObjectInfo] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        check_key(entry.name)  # skips temporary files
                        if entry.is_file(follow_symlinks=False):
                            found.append(ObjectInfo((entry.name, entry.stat().st_size)))
                    except ValueError:
                        continue  # not a name this store writes
                    except FileNotFoundError:
                        continue  # removed while listing
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise TransientError(f"could not list {bucket} in {self.root}: {exc}") from exc
        return sorted(found)

    def delete_bucket(self, bucket: str) -> None:
        directory = self._bucket_dir(bucket)
        # Rename first (atomic): the bucket is gone at once, and an upload racing
        # with the delete lands in the trash instead of resurrecting half a bucket.
        trash = self.root / f".trash~{bucket}~{secrets.token_hex(4)}"
        try:
            os.rename(directory, trash)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return
            raise TransientError(f"could not delete {bucket} in {self.root}: {exc}") from exc
        try:
            shutil.rmtree(trash)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TransientError(f"could not delete {bucket} in {self.root}: {exc}") from exc

    def download_url(self, bucket: str, key: str, expires_seconds: int = 600) -> str | None:
        check_bucket(bucket)
        check_key(key)
        return None

    def local_path(self, bucket: str, key: str) -> Path:
        """Where the object's file is (or would be): check :meth:`size` for existence."""
        return self._object_path(bucket, key)

    def client_fields(self) -> dict[str, Any]:
        return {
            "minio-endpoint": "",
            "minio-secured": False,
            "minio-access-key": "",
            "minio-secret-key": "",
        }

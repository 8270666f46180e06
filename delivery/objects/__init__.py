"""The result store: where finished output files live until clients fetch them.

Two backends implement :class:`~delivery.objects.base.ObjectStore`: a directory
on this machine (:class:`~delivery.objects.local.LocalStore`, the embedded
default, whose files the API streams itself) and an S3 endpoint such as MinIO
(:class:`~delivery.objects.s3.S3Store`, which the ServiceX client downloads from
directly with the read-only credentials). :func:`open_store` picks one from
:class:`~delivery.config.Settings`. Both accept the same names only
(:func:`check_bucket`, :func:`check_key`), so a name that works on a laptop works
against MinIO too. The ``minio`` SDK is imported only when an S3 store is opened.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from delivery.objects.base import ObjectInfo, ObjectStore

if TYPE_CHECKING:
    from delivery.config import Settings

__all__ = ["ObjectInfo", "ObjectStore", "check_bucket", "check_key", "open_store"]

# S3's rules, minus the exotic cases: 3-63 lowercase letters, digits, dots and
# hyphens, starting and ending alphanumeric. Request ids (UUIDs) fit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Flat keys: no '/'; the same characters the engine's output names use
# (transformers.run.output_path), at most 255 (a file name on Linux).
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def check_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a valid bucket name, else raise ValueError."""
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"invalid bucket name {bucket!r}: use 3-63 characters a-z, 0-9, '.', '-', "
            "starting and ending with a letter or digit"
        )
    return bucket


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid flat object key, else raise ValueError."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key in (".", ".."):
        raise ValueError(
            f"invalid object key {key!r}: use 1-255 characters A-Z, a-z, 0-9, '_', '.', '-' "
            "(no '/'), other than '.' and '..'"
        )
    return key


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings describe: S3 if ``s3_endpoint`` is set, else a local directory."""
    if not settings.s3_endpoint:
        from delivery.objects.local import LocalStore

        return LocalStore(settings.results_dir)
    from delivery.objects.s3 import S3Store

    return S3Store(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key,
        secure=settings.s3_secure,
        read_access_key=settings.s3_read_access_key,
        read_secret_key=settings.s3_read_secret_key,
    )

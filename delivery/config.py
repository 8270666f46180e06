"""Service configuration, read from the environment (flags override it in the CLI).

These names are part of the interface:

=============================== ==============================================
``DELIVERY_STATE_DIR``          where the embedded default keeps its state
                                (default ``~/.local/state/columnar-delivery``)
``DELIVERY_DATABASE_URL``       SQLAlchemy URL; default SQLite under the state dir
``DELIVERY_BROKER_URL``         ``amqp://...``; unset: embedded in-process workers
``DELIVERY_S3_ENDPOINT``        ``host:port``; unset: a local-directory store
``DELIVERY_S3_ACCESS_KEY``      workers' write credentials
``DELIVERY_S3_SECRET_KEY``
``DELIVERY_S3_SECURE``          ``true`` for https
``DELIVERY_S3_READ_ACCESS_KEY`` read-only credentials, the only ones clients see
``DELIVERY_S3_READ_SECRET_KEY``
``DELIVERY_ALLOWED_ROOTS``      ``:``-separated folders local paths may name
``DELIVERY_QUEUE``              the work queue's name (default ``delivery.files``)
``DELIVERY_SERVICE_TOKEN``      the workers' credential for internal endpoints
``DELIVERY_API_URL``            where ``delivery worker`` reports (with that token)
``DELIVERY_AUTH``               ``on``: users need tokens (``POST /token/refresh``)
``DELIVERY_AUTH_SECRET``        signs access tokens; required (32+ characters) with auth
``DELIVERY_ACCESS_TTL``         access-token lifetime in seconds (default 900)
``DELIVERY_FILE_TIMEOUT``       seconds one file's transform may take before it is
                                killed and retried (default 600; ``0``: no limit)
``DELIVERY_WORKER_MEMORY``      memory one file's transform may use: bytes or
                                ``512M``, ``1G``...; more fails the file (default: no limit)
=============================== ==============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "parse_bytes"]

_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    database_url: str
    broker_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_secure: bool = False
    s3_read_access_key: str | None = field(default=None, repr=False)
    s3_read_secret_key: str | None = field(default=None, repr=False)
    allowed_roots: tuple[str, ...] = ()
    queue: str = "delivery.files"
    service_token: str | None = field(default=None, repr=False)
    api_url: str | None = None
    auth: bool = False
    auth_secret: str | None = field(default=None, repr=False)
    access_ttl: int = 900
    file_timeout: float | None = 600.0  # None: no limit
    worker_memory: int | None = None  # bytes; None: no limit

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def local_store(self) -> bool:
        return not self.s3_endpoint

    @property
    def results_dir(self) -> Path:
        return self.state_dir / "results"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        e = os.environ if env is None else env
        state = Path(e.get("DELIVERY_STATE_DIR")
                     or Path.home() / ".local" / "state" / "columnar-delivery")
        roots = tuple(r for r in e.get("DELIVERY_ALLOWED_ROOTS", "").split(os.pathsep) if r)
        values: dict[str, object] = dict(
            state_dir=state,
            database_url=e.get("DELIVERY_DATABASE_URL") or f"sqlite:///{state / 'delivery.db'}",
            broker_url=e.get("DELIVERY_BROKER_URL") or None,
            s3_endpoint=e.get("DELIVERY_S3_ENDPOINT") or None,
            s3_access_key=e.get("DELIVERY_S3_ACCESS_KEY") or None,
            s3_secret_key=e.get("DELIVERY_S3_SECRET_KEY") or None,
            s3_secure=e.get("DELIVERY_S3_SECURE", "").lower() in _TRUE,
            s3_read_access_key=e.get("DELIVERY_S3_READ_ACCESS_KEY") or None,
            s3_read_secret_key=e.get("DELIVERY_S3_READ_SECRET_KEY") or None,
            allowed_roots=roots,
            queue=e.get("DELIVERY_QUEUE") or "delivery.files",
            service_token=e.get("DELIVERY_SERVICE_TOKEN") or None,
            api_url=e.get("DELIVERY_API_URL") or None,
            auth=e.get("DELIVERY_AUTH", "").lower() in _TRUE,
            auth_secret=e.get("DELIVERY_AUTH_SECRET") or None,
            access_ttl=int(e.get("DELIVERY_ACCESS_TTL") or 900),
            file_timeout=_positive(float(e.get("DELIVERY_FILE_TIMEOUT") or 600)),
            worker_memory=parse_bytes(e.get("DELIVERY_WORKER_MEMORY") or "0") or None,
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _positive(value: float) -> float | None:
    return value if value > 0 else None


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"1G"``, ``"512M"``, ``"1.5GiB"``, ``"2048"`` as bytes (binary units)."""
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] else ""
    try:
        value = float(s[: len(s) - len(unit)])
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use bytes or e.g. 512M, 1G)") from None
    if not 0 <= value < float(1 << 62):  # also nan and inf
        raise ValueError(f"not a size: {text!r}")
    return int(value * _UNITS[unit])

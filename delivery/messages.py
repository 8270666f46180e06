"""What travels between the API, the broker and the workers.

A :class:`FileTask` is one message per input file. A :class:`FileReport` is a
worker's verdict on it; recording a report is an upsert on (request, file), so
a redelivered or repeated report never double-counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FileTask", "FileReport", "SUCCESS", "FAILURE", "file_sha256"]

SUCCESS = "success"
FAILURE = "failure"


@dataclass(frozen=True)
class FileTask:
    request_id: str
    file_id: int
    replicas: tuple[str, ...]
    selection: str  # canonical JSON of the parsed selection
    format: str  # parquet, arrow or root-file

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> FileTask:
        data: dict[str, Any] = json.loads(body)
        data["replicas"] = tuple(data["replicas"])
        return cls(**data)


@dataclass(frozen=True)
class FileReport:
    request_id: str
    file_id: int
    status: str  # SUCCESS or FAILURE
    object_name: str | None = None
    total_bytes: int = 0
    sha256: str | None = None  # of the stored object, so clients can verify what they got
    events_in: int = 0
    events_out: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileReport:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 a report carries for an output, and a client checks after download."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

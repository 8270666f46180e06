"""The client's local cache of deliveries: a re-run returns at once, an interrupted one reattaches.

Layout (root: ``$DELIVERY_CACHE`` or ``~/.cache/columnar-delivery/client``)::

    <root>/<key>/entry.json     # the entry (JSON, written atomically: tmp + os.replace)
    <root>/<key>/files/         # where deliver() downloads this entry's files by default

``key`` is the sha256 of (server URL, dataset (sorted file list or DID),
canonical selection JSON as in :func:`~delivery.client.client.request_body`,
format); the sample's name is recorded but not part of the key.

An entry's ``state`` is ``"running"`` from the submit until the request has
been delivered completely without failures, then ``"complete"``. Its files
count only while they still exist with the recorded size
(:meth:`Entry.intact`). :func:`clear` removes the entries' folders, i.e. the
files downloaded into the cache; files downloaded into a caller's own
``dest_dir`` are the caller's and are left alone.

Updates of one entry are serialized within the process (a lock around each
read-modify-write); two processes delivering the same thing at the same time
may each record their own request, the last writer wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from delivery.client.client import request_body

__all__ = ["CachedFile", "Entry", "cache_dir", "clear", "entry_dir", "files_dir", "forget",
           "key_for", "list_entries", "lookup", "record_complete", "record_file",
           "record_submitted"]

State = Literal["running", "complete"]
_ENTRY = "entry.json"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class CachedFile:
    """One downloaded file: its absolute ``path``, ``size`` in bytes and the server's file id."""

    path: str
    size: int
    file_id: Any = None

    def intact(self) -> bool:
        try:
            return Path(self.path).stat().st_size == self.size
        except OSError:
            return False


@dataclass
class Entry:
    key: str
    server: str
    sample: str
    request_id: str
    state: State
    files: list[CachedFile] = field(default_factory=list)
    created: float = 0.0

    def intact(self) -> bool:
        """Every recorded file still exists with its recorded size."""
        return all(f.intact() for f in self.files)

    def valid_files(self) -> list[CachedFile]:
        return [f for f in self.files if f.intact()]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        state = data["state"]
        if state not in ("running", "complete"):
            raise ValueError(f"bad state {state!r}")
        return cls(key=str(data["key"]), server=str(data["server"]), sample=str(data["sample"]),
                   request_id=str(data["request_id"]), state=state,
                   files=[CachedFile(str(f["path"]), int(f["size"]), f.get("file_id"))
                          for f in data.get("files", [])],
                   created=float(data.get("created", 0.0)))


def cache_dir() -> Path:
    """``$DELIVERY_CACHE``, else ``~/.cache/columnar-delivery/client``."""
    env = os.environ.get("DELIVERY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "columnar-delivery" / \
        "client"


def key_for(server: str, sample: Mapping[str, Any]) -> str:
    """The cache key of one sample of a spec at ``server`` (validates the sample)."""
    body = request_body(sample)
    dataset: Any = sorted(body["file-list"]) if "file-list" in body else body["did"]
    selection = body["selection"]
    try:  # canonical: the same selection written differently gives the same key
        selection = json.loads(selection)
    except (TypeError, ValueError):
        pass
    text = json.dumps([server.rstrip("/"), dataset, selection, body["result-format"]],
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_dir(key: str) -> Path:
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"not a cache key: {key!r}")
    return cache_dir() / key


def files_dir(key: str) -> Path:
    """The stable folder of this entry's downloads."""
    return entry_dir(key) / "files"


def _read(key: str) -> Entry | None:
    try:
        data = json.loads((entry_dir(key) / _ENTRY).read_text())
        return Entry.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(entry: Entry) -> None:
    folder = entry_dir(entry.key)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".entry.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(entry.to_json(), out, indent=1)
        os.replace(tmp, folder / _ENTRY)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def lookup(key: str) -> Entry | None:
    """The entry of ``key``, or None (also for an unreadable one)."""
    return _read(key)


def record_submitted(key: str, *, server: str, sample: str, request_id: str,
                     files: list[CachedFile] | None = None) -> Entry:
    """A new ``running`` entry for ``request_id`` (replaces any old one of ``key``)."""
    entry = Entry(key, server, sample, request_id, "running", list(files or []), time.time())
    with _LOCK:
        _write(entry)
    return entry


def record_file(key: str, path: str | Path, size: int, file_id: Any = None) -> None:
    """Add (or replace, by path) one downloaded file of the entry."""
    with _LOCK:
        entry = _read(key)
        if entry is None:
            return
        where = str(Path(path).resolve())
        entry.files = [f for f in entry.files if f.path != where]
        entry.files.append(CachedFile(where, int(size), file_id))
        _write(entry)


def record_complete(key: str) -> None:
    with _LOCK:
        entry = _read(key)
        if entry is not None:
            entry.state = "complete"
            _write(entry)


def forget(key: str) -> None:
    """Remove one entry and its folder."""
    with _LOCK:
        shutil.rmtree(entry_dir(key), ignore_errors=True)


def list_entries() -> list[Entry]:
    """Every readable entry, oldest first."""
    root = cache_dir()
    if not root.is_dir():
        return []
    found = [e for e in (_read(p.name) for p in root.iterdir()
                         if p.is_dir() and (p / _ENTRY).is_file()) if e is not None]
    return sorted(found, key=lambda e: e.created)


def clear(older_than: float | None = None) -> int:
    """Remove the entries (and the files downloaded into the cache), or only those created
    more than ``older_than`` seconds ago; how many were removed."""
    limit = None if older_than is None else time.time() - older_than
    removed = 0
    for entry in list_entries():
        if limit is None or entry.created < limit:
            forget(entry.key)
            removed += 1
    return removed

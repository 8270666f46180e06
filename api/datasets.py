"""Datasets: turn a ``file-list`` or a DID into the list of files to transform.

Built-in finders:

- a local glob (``/data/run1/*.root`` or ``file:///...``) inside the allowed roots;
- ``root://host//path/*.root``: a glob through the XRootD server's directory listing;
- ``https://host/file.root`` (and ``http://``): that one file.

Other schemes (``rucio://``, ``cernopendata://``) come from plugins: a callable
registered under the entry-point group ``columnar_delivery.finders`` with the
scheme as its name, taking ``(did_without_scheme, policy)`` and returning a
list of files, each a list of replica URLs. A DID nobody can resolve is not a
client error: the request ends ``Bad Dataset`` and the dataset's
``lookup_status`` says why. ``?files=N`` keeps the first N files in sorted
order, so the subset is deterministic.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from delivery.errors import DeliveryError, PolicyError
from delivery.policy import SourcePolicy, is_local

__all__ = ["Resolved", "LookupFailed", "resolve_did", "check_file_list", "MAX_FILES"]

MAX_FILES = 100_000
Finder = Callable[[str, SourcePolicy], list[list[str]]]
_FILES = re.compile(r"[?&]files=(\d+)$")


class LookupFailed(DeliveryError):
    """The DID cannot be resolved: the request becomes ``Bad Dataset``."""


@dataclass(frozen=True)
class Resolved:
    name: str
    finder: str
    files: list[list[str]]


def _limit(did: str) -> tuple[str, int | None]:
    m = _FILES.search(did)
    return (did[: m.start()], int(m.group(1))) if m else (did, None)


def _local(did: str, policy: SourcePolicy) -> list[list[str]]:
    pattern = urlsplit(did).path if did.startswith("file://") else did
    directory = os.path.dirname(pattern) or "."
    policy.check(directory)  # refuse a glob that reaches outside the roots, before listing
    hits = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    files = []
    for hit in hits:
        if os.path.isfile(hit):
            files.append([policy.check(hit)])
    if not files:
        raise LookupFailed(f"no files match {did!r}")
    return files


def _xrootd(did: str, policy: SourcePolicy) -> list[list[str]]:
    policy.check(did)
    parts = urlsplit(did)
    if not glob.has_magic(parts.path):
        return [[did]]
    try:
        import fsspec

        fs = fsspec.filesystem("root", hostid=parts.netloc, timeout=30)
        paths = sorted(fs.glob(parts.path.lstrip("/") if parts.path.startswith("//")
                               else parts.path))
    except Exception as err:
        raise LookupFailed(f"cannot list {did}: {' '.join(str(err).split())[:200]}") from None
    files = [[f"root://{parts.netloc}/{p if p.startswith('/') else '/' + p}"] for p in paths]
    if not files:
        raise LookupFailed(f"no files match {did!r}")
    return files


def _http(did: str, policy: SourcePolicy) -> list[list[str]]:
    policy.check(did)
    if glob.has_magic(urlsplit(did).path):
        raise LookupFailed("http(s) DIDs name one file; globs need an XRootD or local path")
    return [[did]]


def _plugin(scheme: str) -> Finder | None:
    for ep in entry_points(group="columnar_delivery.finders"):
        if ep.name == scheme:
            finder: Finder = ep.load()
            return finder
    return None


def resolve_did(did: str, policy: SourcePolicy) -> Resolved:
    """Resolve a DID, or raise PolicyError (a 400) or LookupFailed (Bad Dataset)."""
    if not isinstance(did, str) or not did.strip() or len(did) > 4096:
        raise PolicyError("did must be a non-empty string")
    base, limit = _limit(did.strip())
    scheme = urlsplit(base).scheme.lower() if "://" in base else ""
    finder: Finder
    if is_local(base):
        finder, name = _local, "local"
    elif scheme == "root":
        finder, name = _xrootd, "root"
    elif scheme in ("http", "https"):
        finder, name = _http, scheme
    else:
        plugin = _plugin(scheme)
        if plugin is None:
            raise LookupFailed(f"no finder configured for {scheme}:// DIDs")
        finder, name = plugin, scheme
        base = base.split("://", 1)[1]
    files = finder(base, policy)
    if limit is not None:
        files = files[:limit]
    if len(files) > MAX_FILES:
        raise LookupFailed(f"dataset has {len(files)} files; the limit is {MAX_FILES}")
    return Resolved(did, name, files)


def check_file_list(urls: object, policy: SourcePolicy) -> list[list[str]]:
    """A ``file-list`` as files of one replica each; any refused entry refuses the request."""
    if not isinstance(urls, list) or not urls:
        raise PolicyError("file-list must be a non-empty list of paths or URLs")
    if len(urls) > MAX_FILES:
        raise PolicyError(f"file-list has {len(urls)} entries; the limit is {MAX_FILES}")
    files = []
    for i, url in enumerate(urls):
        if not isinstance(url, str):
            raise PolicyError(f"file-list[{i}] must be a string")
        policy.check(url)
        files.append([url])
    return files

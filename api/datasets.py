"""Datasets: turn a ``file-list`` or a DID into the list of files to transform.

Built-in finders:

- a local glob (``/data/run1/*.root`` or ``file:///...``) inside the allowed roots;
- ``root://host//path/*.root``: a glob through the XRootD server's directory listing;
- ``https://host/file.root`` (and ``http://``): that one file.

Other schemes (``rucio://``, ``cernopendata://``) come from plugins: a callable
registered under the entry-point group ``columnar_delivery.finders`` with the
scheme as its name, taking ``(did_without_scheme, policy)`` and returning a
list of files, each a list of replica URLs (a bare string is one replica). Its
replicas are checked against the policy like any input: refused ones are dropped,
and a file left with none fails the lookup. A DID nobody can resolve is not a
client error: the request ends ``Bad Dataset`` and the dataset's
``lookup_status`` says why. ``?files=N`` keeps the first N files in sorted
order, so the subset is deterministic.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from urllib.parse import SplitResult, urlsplit

from delivery.errors import DeliveryError, PolicyError
from delivery.policy import SourcePolicy, is_local

__all__ = ["Resolved", "LookupFailed", "resolve_did", "check_file_list", "MAX_FILES"]

MAX_FILES = 100_000
XROOTD_PORT = 1094
XROOTD_CONNECT_TIMEOUT = 10.0  # seconds for the TCP check before listing
XROOTD_TIMEOUT = 30  # seconds per XRootD request (the client checks every 15 s)
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


def _reachable(parts: SplitResult) -> None:
    """Fail fast (and say why) when nothing listens at the XRootD host: the XRootD
    client itself retries a refused connection until its request timeout and then
    only reports ``[ERROR] Operation expired``."""
    try:
        host, port = parts.hostname, parts.port or XROOTD_PORT
    except ValueError as err:
        raise LookupFailed(f"cannot list {parts.geturl()}: {err}") from None
    if not host:
        raise LookupFailed(f"cannot list {parts.geturl()}: no host")
    try:
        with socket.create_connection((host, port), timeout=XROOTD_CONNECT_TIMEOUT):
            pass
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise LookupFailed(f"cannot reach XRootD server {host}:{port}: {reason}") from None


def _xrootd(did: str, policy: SourcePolicy) -> list[list[str]]:
    policy.check(did)
    parts = urlsplit(did)
    if not glob.has_magic(parts.path):
        return [[did]]
    # root://host//abs/dir/*.root: the server path is "/abs/dir/*.root" (drop ONE slash;
    # "abs/dir" would be a path relative to the server's root and matches nothing).
    path = parts.path[1:] if parts.path.startswith("//") else parts.path
    segments = path.split("/")
    static = "/".join(itertools.takewhile(lambda seg: not glob.has_magic(seg), segments)) or "/"
    _reachable(parts)
    try:
        import fsspec

        # A fresh instance without a listings cache: fsspec caches instances per host,
        # and a cached directory listing would hide files added since the last lookup.
        fs = fsspec.filesystem("root", hostid=parts.netloc, timeout=XROOTD_TIMEOUT,
                               skip_instance_cache=True, use_listings_cache=False)
        fs.ls(static, detail=False)  # glob() swallows errors; this one raises them
        found = fs.glob(path, detail=True)
    except Exception as err:
        raise LookupFailed(f"cannot list {did}: {' '.join(str(err).split())[:200]}") from None
    paths = sorted(name for name, info in found.items() if info.get("type") != "directory")
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
            try:
                finder: Finder = ep.load()
            except Exception as err:
                raise LookupFailed(f"the {scheme}:// finder {ep.value!r} cannot be loaded: "
                                   f"{type(err).__name__}: {err}") from None
            return finder
    return None


def _run_plugin(scheme: str, finder: Finder, did: str, policy: SourcePolicy) -> list[list[str]]:
    """Call a plugin finder; its files are checked against the policy like any input."""
    try:
        found = finder(did, policy)
    except DeliveryError:
        raise
    except Exception as err:
        raise LookupFailed(f"the {scheme}:// finder failed: {type(err).__name__}: {err}") \
            from None
    if isinstance(found, str | bytes) or not isinstance(found, list | tuple):
        raise LookupFailed(f"the {scheme}:// finder returned {type(found).__name__}, "
                           "not a list of files")
    files: list[list[str]] = []
    for i, entry in enumerate(found):
        replicas = [entry] if isinstance(entry, str) else entry
        if not isinstance(replicas, list | tuple) or not replicas \
                or not all(isinstance(r, str) for r in replicas):
            raise LookupFailed(f"the {scheme}:// finder returned a bad file #{i}: "
                               f"{str(entry)[:80]!r} (want a list of replica URLs)")
        allowed, refusal = [], ""
        for replica in replicas:
            try:
                allowed.append(policy.check(replica))
            except PolicyError as err:
                refusal = err.reason
        if not allowed:
            raise LookupFailed(f"{scheme}:// file #{i} has no replica this service may read: "
                               f"{refusal}")
        files.append(allowed)
    return files


def resolve_did(did: str, policy: SourcePolicy) -> Resolved:
    """Resolve a DID, or raise PolicyError (a 400) or LookupFailed (Bad Dataset)."""
    if not isinstance(did, str) or not did.strip() or len(did) > 4096:
        raise PolicyError("did must be a non-empty string")
    base, limit = _limit(did.strip())
    if limit == 0:
        raise PolicyError("?files=N needs N of at least 1")
    scheme = urlsplit(base).scheme.lower() if "://" in base else ""
    if is_local(base):
        files, name = _local(base, policy), "local"
    elif scheme == "root":
        files, name = _xrootd(base, policy), "root"
    elif scheme in ("http", "https"):
        files, name = _http(base, policy), scheme
    else:
        plugin = _plugin(scheme)
        if plugin is None:
            raise LookupFailed(f"no finder configured for {scheme}:// DIDs")
        files, name = _run_plugin(scheme, plugin, base.split("://", 1)[1], policy), scheme
    files = sorted(files)  # "?files=N" must pick the same N files every time
    if limit is not None:
        files = files[:limit]
    if len(files) > MAX_FILES:
        raise LookupFailed(f"dataset has {len(files)} files; the limit is {MAX_FILES}")
    if not files:
        raise LookupFailed(f"no files found for {did!r}")
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

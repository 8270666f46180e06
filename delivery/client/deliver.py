"""The client: submit, follow with the long poll, download safely, load.

A *spec* names one or more samples, ServiceX-style::

    {"Sample": [{"Name": "zmumu",                      # unique; [A-Za-z0-9_.-], used as a folder
                 "Dataset": ["/data/a.root", ...],      # a list of files, or a DID string
                 "Query": Query(...) | "<JSON>" | [...],  # validated locally before any submit
                 "Format": "parquet"}]}                 # or "root-file"/"arrow" with output="paths"

Contracts:

- Every query is validated (:func:`delivery.parse_selection`) before the first
  HTTP call: a bad one raises :class:`~delivery.errors.SelectionError` and
  nothing is submitted.
- Following and downloading are :class:`~delivery.client.client.Client`'s:
  long poll only, and no partial file is ever visible under its final name.
- :func:`deliver` starts each download as soon as the file's result appears
  (``download_workers`` in parallel). By default any failure raises one
  :class:`DeliveryFailed` listing every failed file and its reason; with
  ``fail_if_incomplete=False`` the good part is returned with ``.failures``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from delivery.client import cache as _cache
from delivery.client.client import (
    FINAL,
    Client,
    DeliveryFailed,
    FileFailure,
    request_body,
)
from delivery.client.http import ServerRefused
from delivery.client.progress import Progress, Quiet, make_progress
from delivery.errors import PermanentError, TransientError

V = TypeVar("V")


class Delivery(Mapping[str, V], Generic[V]):
    """Sample name -> result (``ak.Array`` or a list of paths), plus ``failures``
    and the ``request_ids`` that produced them."""

    def __init__(self, data: dict[str, V], failures: list[FileFailure],
                 request_ids: dict[str, str]) -> None:
        self._data = data
        self.failures = failures
        self.request_ids = request_ids

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Delivery({sorted(self._data)}, failures={len(self.failures)})"



def _load(path: Path) -> Any:
    import awkward as ak
    import pyarrow.parquet as pq

    return ak.from_arrow(pq.read_table(path))


@dataclass
class _Event:
    kind: Literal["file", "done"]
    sample: str
    item: Mapping[str, Any] | None = None
    path: Path | None = None
    failures: tuple[FileFailure, ...] = ()
    error: BaseException | None = None


@dataclass
class _Sample:
    """One sample of a run: where its files go and what the local cache knows of it.

    ``mode``: ``"cached"`` (complete and intact in the cache: no HTTP at all),
    ``"reattach"`` (follow the recorded request; files in ``known`` are not
    downloaded again) or ``"submit"``.
    """

    name: str
    body: dict[str, Any]
    dest: Path
    key: str | None = None
    entry: _cache.Entry | None = None
    mode: Literal["cached", "reattach", "submit"] = "submit"
    known: dict[Any, Path] = field(default_factory=dict)
    total: int | None = None
    transformed: int = 0
    downloaded: int = 0


def _into(path: Path, dest: Path) -> Path:
    """``path`` itself if it is in ``dest``, else an (atomically made) copy there."""
    if path.parent.resolve() == dest.resolve():
        return path
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / path.name
    if final.exists() and final.stat().st_size == path.stat().st_size:
        return final
    part = dest / f".{path.name}.{os.getpid()}.{threading.get_ident()}.part"
    try:
        shutil.copyfile(path, part)
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    return final


class _Run:
    """Submitted (or cached, or reattached) samples; events arrive on ``self.events``."""

    def __init__(self, client: Client, plans: list[_Sample], workers: int,
                 follow_args: dict[str, Any], progress: Progress | None = None) -> None:
        names = [p.name for p in plans]
        if len(set(names)) != len(names):
            raise ValueError("sample Names must be unique")
        self.client, self.follow_args = client, follow_args
        self.samples = {p.name: p for p in plans}
        self.progress: Progress = progress or Quiet()
        self.events: queue.Queue[_Event] = queue.Queue()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers),
                                                          thread_name_prefix="delivery-dl")
        self.request_ids: dict[str, str] = {}
        try:
            for p in plans:  # every reattach checked before any submit
                if p.mode == "reattach" and not self._can_reattach(p):
                    p.mode, p.known = "submit", {}
            for p in plans:
                if p.mode == "submit":
                    self._submit(p)
                else:
                    assert p.entry is not None
                    self.request_ids[p.name] = p.entry.request_id
        except BaseException:
            self.close()
            raise
        for p in plans:
            if p.mode == "cached":
                self._replay(p)
            else:
                threading.Thread(target=self._follow, args=(p.name,), daemon=True,
                                 name=f"delivery-follow-{p.name}").start()

    def _can_reattach(self, p: _Sample) -> bool:
        """The recorded request still exists and has not ended badly."""
        assert p.entry is not None
        try:
            status = self.client.status(p.entry.request_id)
        except ServerRefused as err:
            if err.status == 404:
                return False
            raise
        return status["status"] not in FINAL or status["status"] == "Complete"

    def _submit(self, p: _Sample) -> None:
        answer = self.client.http.request("POST", "/servicex/transformation", json=p.body)
        rid = str(answer["request_id"])
        self.request_ids[p.name] = rid
        if p.key is not None:
            if p.dest == _cache.files_dir(p.key):  # old files of this key are stale now
                shutil.rmtree(p.dest, ignore_errors=True)
            _cache.record_submitted(p.key, server=self.client.http.base_url, sample=p.name,
                                    request_id=rid)

    def _show(self, p: _Sample) -> None:
        if self.stop.is_set():
            return
        self.progress.update(p.name, "transform", p.transformed, p.total)
        self.progress.update(p.name, "download", p.downloaded, p.total)

    def _replay(self, p: _Sample) -> None:
        """A sample complete in the cache: its files, with no HTTP call."""
        p.total = p.transformed = p.downloaded = len(p.known)
        for fid, path in sorted(p.known.items(), key=lambda kv: _order(kv[0])):
            self.events.put(_Event("file", p.name, {"file-id": fid}, _into(path, p.dest)))
        self._show(p)
        self.events.put(_Event("done", p.name))

    def _count_total(self, p: _Sample, rid: str) -> None:
        if isinstance(self.progress, Quiet):
            return
        with contextlib.suppress(TransientError, PermanentError):
            files = self.client.status(rid).get("files")
            p.total = int(files) if files is not None else None

    def _download(self, name: str, item: Mapping[str, Any]) -> None:
        p = self.samples[name]
        rid = self.request_ids[name]
        try:
            path = self.client.download(rid, item, p.dest)
            if p.key is not None:
                _cache.record_file(p.key, path, path.stat().st_size, item.get("file-id"))
            with self.lock:
                p.downloaded += 1
                self._show(p)
            self.events.put(_Event("file", name, item, path))
        except Exception as err:  # noqa: BLE001 - reported as this file's failure
            reason = err.reason if isinstance(err, TransientError | PermanentError) else repr(err)
            failure = FileFailure(name, item.get("file-path"), f"download failed: {reason}")
            self.events.put(_Event("file", name, item, failures=(failure,)))

    def _follow(self, name: str) -> None:
        p = self.samples[name]
        rid = self.request_ids[name]
        futures = []
        try:
            self._count_total(p, rid)
            with self.lock:
                self._show(p)
            for item in self.client.follow(rid, **self.follow_args):
                if self.stop.is_set():
                    return
                with self.lock:
                    p.transformed += 1
                    recount = p.total is None or p.transformed > p.total
                if recount:  # the file count was not known yet (a dataset being looked up)
                    self._count_total(p, rid)
                with self.lock:
                    self._show(p)
                if item["transform_status"] != "success":
                    continue
                known = p.known.get(item["file-id"])
                if known is not None:  # already downloaded before an interruption
                    with self.lock:
                        p.downloaded += 1
                        self._show(p)
                    self.events.put(_Event("file", name, item, _into(known, p.dest)))
                else:
                    futures.append(self.pool.submit(self._download, name, item))
            concurrent.futures.wait(futures)
            status = self.client.status(rid)
            failed = [FileFailure(name, f.get("file-path"), f.get("error") or "failed")
                      for f in self.client.failures(rid)] if status["files-failed"] else []
            if status["status"] != "Complete":
                failed.append(FileFailure(name, None, f"request {rid} ended {status['status']}: "
                                                      f"{status.get('failure-info') or ''}"))
            with self.lock:  # complete: every file transformed and downloaded
                whole = not failed and p.downloaded == (status["files-completed"] or 0)
            if p.key is not None and whole and not self.stop.is_set():
                _cache.record_complete(p.key)
            with self.lock:
                if status.get("files") is not None:
                    p.total = int(status["files"])
                self._show(p)
            self.events.put(_Event("done", name, failures=tuple(failed)))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            for f in futures:
                f.cancel()
            self.events.put(_Event("done", name, error=err))

    def __iter__(self) -> Iterator[_Event]:
        """Every event until each sample is done; raises a follower's error at once."""
        pending = set(self.request_ids)
        try:
            while pending:
                event = self.events.get()
                if event.error is not None:
                    raise event.error
                if event.kind == "done":
                    pending.discard(event.sample)
                yield event
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.progress.close()


class DeliveryStream:
    """``(sample name, ak.Array)`` per file as it lands (one file in memory at a time).

    Iterate once. ``failures`` is complete when the iteration has ended; with
    ``fail_if_incomplete`` the end raises :class:`DeliveryFailed` instead.
    Files in ``cleanup`` (a private temporary folder) are deleted once loaded;
    files in the local cache are kept.
    """

    def __init__(self, run: _Run, fail_if_incomplete: bool, cleanup: Path | None,
                 client: Client | None = None) -> None:
        self._run, self._strict, self._cleanup = run, fail_if_incomplete, cleanup
        self._client = client  # closed at the end when the stream owns it
        self.failures: list[FileFailure] = []
        self.request_ids = dict(run.request_ids)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        try:
            for event in self._run:
                self.failures.extend(event.failures)
                if event.path is not None:
                    array = _load(event.path)
                    if self._cleanup is not None and self._cleanup in event.path.parents:
                        event.path.unlink(missing_ok=True)
                    yield event.sample, array
            if self.failures and self._strict:
                raise DeliveryFailed(self.failures)
        finally:
            self._run.close()
            if self._cleanup is not None:
                shutil.rmtree(self._cleanup, ignore_errors=True)
            if self._client is not None:
                self._client.close()


Output = Literal["arrays", "paths", "iterator"]


def deliver(spec: Mapping[str, Any], *, client: Client | None = None,
            fail_if_incomplete: bool = True, output: Output = "arrays",
            download_workers: int = 4, dest_dir: str | Path | None = None,
            deadline: float | None = None, stall_timeout: float = 900.0,
            grace: float = 10.0, cache: bool = True, ignore_cache: bool = False,
            progress: bool = True) -> Any:
    """Run every sample of ``spec`` and return its data.

    ``output="arrays"``: a :class:`Delivery` of ``{name: ak.Array}`` (files
    concatenated in input order); ``"paths"``: a :class:`Delivery` of
    ``{name: [Path, ...]}``; ``"iterator"``: a :class:`DeliveryStream`.
    Files go to ``dest_dir/<name>/`` if given, else (with ``cache``) to the
    entry's stable folder in the local cache (:mod:`delivery.client.cache`),
    else to a new temporary folder (kept for ``"paths"``).
    ``client`` defaults to ``Client(os.environ["DELIVERY_API_URL"])``.
    ``deadline``/``stall_timeout``/``grace`` are as in :meth:`Client.follow`.

    ``cache``: a sample delivered completely before (same server, dataset,
    selection and format) whose files are intact is returned without any HTTP
    call; one whose earlier delivery was interrupted (or whose files were
    changed since) is reattached: its recorded request is followed instead of
    submitting again, and files already downloaded are not downloaded again.
    ``ignore_cache``: submit anew (the cache is still updated).
    ``progress``: ``transform`` and ``download`` bars per sample
    (:mod:`delivery.client.progress`); ``False`` is quiet.
    """
    if output not in ("arrays", "paths", "iterator"):
        raise ValueError(f"output must be arrays, paths or iterator, not {output!r}")
    samples = spec.get("Sample") if isinstance(spec, Mapping) else None
    if not isinstance(samples, list) or not samples:
        raise ValueError('spec must be {"Sample": [sample, ...]} with at least one sample')
    if output != "paths" and any(s.get("Format", "parquet") != "parquet" for s in samples):
        raise ValueError('output="arrays"/"iterator" needs Format "parquet"')
    bodies = [request_body(s) for s in samples]  # validate everything before any HTTP call
    names = [b["title"] for b in bodies]
    if len(set(names)) != len(names):
        raise ValueError("sample Names must be unique")
    owned = client is None
    if client is None:
        url = os.environ.get("DELIVERY_API_URL")
        if not url:
            raise ValueError("give client=Client(url) or set DELIVERY_API_URL")
        client = Client(url, os.environ.get("DELIVERY_TOKEN"))
    tmp: Path | None = None
    own_dest: Path | None = None
    follow_args = {"deadline": deadline, "stall_timeout": stall_timeout, "grace": grace}
    try:
        plans = _plan(client.http.base_url, samples, bodies, dest_dir, cache, ignore_cache)
        for plan in plans:
            if plan.dest == Path():
                tmp = tmp or Path(tempfile.mkdtemp(prefix="delivery-"))
                plan.dest = tmp / plan.name
        own_dest = tmp if output != "paths" else None
        run = _Run(client, plans, download_workers, follow_args, make_progress(progress))
        if output == "iterator":
            stream = DeliveryStream(run, fail_if_incomplete, own_dest,
                                    client if owned else None)
            owned = False  # the stream closes it
            own_dest = None  # and cleans up
            return stream
        files: dict[str, dict[Any, Path]] = {name: {} for name in run.request_ids}
        failures: list[FileFailure] = []
        for event in run:
            failures.extend(event.failures)
            if event.path is not None and event.item is not None:
                files[event.sample][event.item["file-id"]] = event.path
        if failures and fail_if_incomplete:
            raise DeliveryFailed(failures)
        ordered = {name: [got[k] for k in sorted(got, key=_order)]
                   for name, got in files.items()}
        if output == "paths":
            return Delivery(ordered, failures, run.request_ids)
        import awkward as ak

        arrays = {name: ak.concatenate([_load(p) for p in paths]) if paths else ak.Array([])
                  for name, paths in ordered.items()}
        return Delivery(arrays, failures, run.request_ids)
    finally:
        if owned:
            client.close()
        if own_dest is not None and output == "arrays":
            shutil.rmtree(own_dest, ignore_errors=True)


def _order(file_id: Any) -> tuple[int, int, str]:
    return (0, file_id, "") if isinstance(file_id, int) else (1, 0, str(file_id))


def _plan(server: str, samples: list[Mapping[str, Any]], bodies: list[dict[str, Any]],
          dest_dir: str | Path | None, use_cache: bool,
          ignore_cache: bool) -> list[_Sample]:
    """What to do for each sample (``dest`` ``Path()``: a temporary folder, made later)."""
    plans: list[_Sample] = []
    seen: set[str] = set()
    for sample, body in zip(samples, bodies, strict=True):
        name = body["title"]
        plan = _Sample(name, body, Path(dest_dir) / name if dest_dir is not None else Path())
        key = _cache.key_for(server, sample) if use_cache else None
        if key is not None and key not in seen:  # two samples of one key: cache the first
            seen.add(key)
            plan.key = key
            if dest_dir is None:
                plan.dest = _cache.files_dir(key)
            entry = None if ignore_cache else _cache.lookup(key)
            if entry is not None:
                plan.entry = entry
                plan.known = {f.file_id: Path(f.path) for f in entry.valid_files()
                              if f.file_id is not None}
                intact = len(plan.known) == len(entry.files)
                plan.mode = "cached" if entry.state == "complete" and intact else "reattach"
        plans.append(plan)
    return plans

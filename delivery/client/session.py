"""The machinery of one :func:`~delivery.client.deliver.deliver` call.

Contract: a :class:`Run` submits (or reattaches to, or serves from the local
cache) each sample, follows every request with the long poll in its own
thread, and hands each finished file to a shared download pool the moment its
result appears. With a ``load`` function, the pool thread that downloaded a
file also loads it (``event.array``), so loading overlaps the other transfers
instead of waiting for the last one. Iterating the run yields one event per
downloaded or failed file; ``close()`` stops the followers and the pool.
"""


import concurrent.futures
import contextlib
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from delivery.client import cache as _cache
from delivery.client.client import (
    FINAL,
    Client,
    FileFailure,
)
from delivery.client.http import ServerRefused
from delivery.client.progress import Progress, Quiet
from delivery.errors import PermanentError, TransientError

__all__ = ["Run", "file_order", "plan_samples"]


@dataclass
class _Event:
    kind: Literal["file", "done"]
    sample: str
    item: Mapping[str, Any] | None = None
    path: Path | None = None
    array: Any = None  # the loaded file, when the run has a ``load`` function
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


class Run:
    """Submitted (or cached, or reattached) samples; events arrive on ``self.events``."""

    def __init__(self, client: Client, plans: list[_Sample], workers: int,
                 follow_args: dict[str, Any], progress: Progress | None = None,
                 load: Callable[[Path, str], Any] | None = None) -> None:
        names = [p.name for p in plans]
        if len(set(names)) != len(names):
            raise ValueError("sample Names must be unique")
        self.client, self.follow_args, self.load = client, follow_args, load
        self.samples = {p.name: p for p in plans}
        self.progress: Progress = progress or Quiet()
        self.progress.start(names)  # in the caller's thread: see delivery.client.progress
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
            threading.Thread(target=self._replay if p.mode == "cached" else self._follow,
                             args=(p.name,), daemon=True,
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

    def _hand_over(self, name: str, item: Mapping[str, Any], path: Path) -> None:
        """Queue the file's event, loaded first if the run loads (a pool thread)."""
        try:
            array = self.load(path, name) if self.load is not None else None
        except BaseException as err:  # noqa: BLE001 - an unreadable file stops the run
            self.events.put(_Event("file", name, item, path, error=err))
            return
        self.events.put(_Event("file", name, item, path, array))

    def _replay(self, name: str) -> None:
        """A sample complete in the cache: its files, with no HTTP call."""
        p = self.samples[name]
        p.total = p.transformed = p.downloaded = len(p.known)
        try:
            futures = [self.pool.submit(self._hand_over, name, {"file-id": fid},
                                        _into(path, p.dest))
                       for fid, path in sorted(p.known.items(),
                                               key=lambda kv: file_order(kv[0]))]
            concurrent.futures.wait(futures)
            with self.lock:
                self._show(p)
            self.events.put(_Event("done", name))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self.events.put(_Event("done", name, error=err))

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
        except Exception as err:  # noqa: BLE001 - reported as this file's failure
            reason = err.reason if isinstance(err, TransientError | PermanentError) else repr(err)
            failure = FileFailure(name, item.get("file-path"), f"download failed: {reason}")
            self.events.put(_Event("file", name, item, failures=(failure,)))
            return
        self._hand_over(name, item, path)

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
                    futures.append(self.pool.submit(self._hand_over, name, item,
                                                    _into(known, p.dest)))
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


def file_order(file_id: Any) -> tuple[int, int, str]:
    return (0, file_id, "") if isinstance(file_id, int) else (1, 0, str(file_id))


def plan_samples(server: str, samples: list[Mapping[str, Any]], bodies: list[dict[str, Any]],
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

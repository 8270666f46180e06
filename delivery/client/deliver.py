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
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from delivery.client.client import (
    Client,
    DeliveryFailed,
    FileFailure,
    request_body,
)
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


class _Run:
    """Submitted samples being followed; events arrive on ``self.events``."""

    def __init__(self, client: Client, samples: list[Mapping[str, Any]], dest: Path,
                 workers: int, follow_args: dict[str, Any]) -> None:
        bodies = [request_body(s) for s in samples]  # every query checked before any submit
        names = [b["title"] for b in bodies]
        if len(set(names)) != len(names):
            raise ValueError("sample Names must be unique")
        self.client, self.dest, self.follow_args = client, dest, follow_args
        self.events: queue.Queue[_Event] = queue.Queue()
        self.stop = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers),
                                                          thread_name_prefix="delivery-dl")
        self.request_ids: dict[str, str] = {}
        try:
            for name, body in zip(names, bodies, strict=True):
                answer = client.http.request("POST", "/servicex/transformation", json=body)
                self.request_ids[name] = str(answer["request_id"])
        except BaseException:
            self.pool.shutdown(wait=False)
            raise
        for name in names:
            threading.Thread(target=self._follow, args=(name,), daemon=True,
                             name=f"delivery-follow-{name}").start()

    def _download(self, name: str, item: Mapping[str, Any]) -> None:
        rid = self.request_ids[name]
        try:
            path = self.client.download(rid, item, self.dest / name)
            self.events.put(_Event("file", name, item, path))
        except Exception as err:  # noqa: BLE001 - reported as this file's failure
            reason = err.reason if isinstance(err, TransientError | PermanentError) else repr(err)
            failure = FileFailure(name, item.get("file-path"), f"download failed: {reason}")
            self.events.put(_Event("file", name, item, failures=(failure,)))

    def _follow(self, name: str) -> None:
        rid = self.request_ids[name]
        futures = []
        try:
            for item in self.client.follow(rid, **self.follow_args):
                if self.stop.is_set():
                    return
                if item["transform_status"] == "success":
                    futures.append(self.pool.submit(self._download, name, item))
            concurrent.futures.wait(futures)
            status = self.client.status(rid)
            failed = [FileFailure(name, f.get("file-path"), f.get("error") or "failed")
                      for f in self.client.failures(rid)] if status["files-failed"] else []
            if status["status"] != "Complete":
                failed.append(FileFailure(name, None, f"request {rid} ended {status['status']}: "
                                                      f"{status.get('failure-info') or ''}"))
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


class DeliveryStream:
    """``(sample name, ak.Array)`` per file as it lands (one file in memory at a time).

    Iterate once. ``failures`` is complete when the iteration has ended; with
    ``fail_if_incomplete`` the end raises :class:`DeliveryFailed` instead.
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
                    if self._cleanup is not None:
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
            grace: float = 10.0) -> Any:
    """Run every sample of ``spec`` and return its data.

    ``output="arrays"``: a :class:`Delivery` of ``{name: ak.Array}`` (files
    concatenated in input order); ``"paths"``: a :class:`Delivery` of
    ``{name: [Path, ...]}`` in ``dest_dir/<name>/`` (default: a new temporary
    folder that is kept); ``"iterator"``: a :class:`DeliveryStream`.
    ``client`` defaults to ``Client(os.environ["DELIVERY_API_URL"])``.
    ``deadline``/``stall_timeout``/``grace`` are as in :meth:`Client.follow`.
    """
    if output not in ("arrays", "paths", "iterator"):
        raise ValueError(f"output must be arrays, paths or iterator, not {output!r}")
    samples = spec.get("Sample") if isinstance(spec, Mapping) else None
    if not isinstance(samples, list) or not samples:
        raise ValueError('spec must be {"Sample": [sample, ...]} with at least one sample')
    if output != "paths" and any(s.get("Format", "parquet") != "parquet" for s in samples):
        raise ValueError('output="arrays"/"iterator" needs Format "parquet"')
    for s in samples:
        request_body(s)  # validate everything before touching the network
    owned = client is None
    if client is None:
        url = os.environ.get("DELIVERY_API_URL")
        if not url:
            raise ValueError("give client=Client(url) or set DELIVERY_API_URL")
        client = Client(url, os.environ.get("DELIVERY_TOKEN"))
    own_dest = dest_dir is None and output != "paths"
    dest = Path(dest_dir) if dest_dir is not None else Path(
        tempfile.mkdtemp(prefix="delivery-"))
    follow_args = {"deadline": deadline, "stall_timeout": stall_timeout, "grace": grace}
    try:
        run = _Run(client, samples, dest, download_workers, follow_args)
        if output == "iterator":
            stream = DeliveryStream(run, fail_if_incomplete, dest if own_dest else None,
                                    client if owned else None)
            owned = False  # the stream closes it
            return stream
        files: dict[str, dict[Any, Path]] = {name: {} for name in run.request_ids}
        failures: list[FileFailure] = []
        for event in run:
            failures.extend(event.failures)
            if event.path is not None and event.item is not None:
                files[event.sample][event.item["file-id"]] = event.path
        if failures and fail_if_incomplete:
            raise DeliveryFailed(failures)
        ordered = {name: [got[k] for k in sorted(got)] for name, got in files.items()}
        if output == "paths":
            return Delivery(ordered, failures, run.request_ids)
        import awkward as ak

        arrays = {name: ak.concatenate([_load(p) for p in paths]) if paths else ak.Array([])
                  for name, paths in ordered.items()}
        return Delivery(arrays, failures, run.request_ids)
    finally:
        if owned:
            client.close()
        if own_dest and output == "arrays":
            shutil.rmtree(dest, ignore_errors=True)

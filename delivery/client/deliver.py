"""The client: submit, follow with the long poll, download safely, load.

A *spec* names one or more samples, ServiceX-style::

    {"Sample": [{"Name": "zmumu",                      # unique; [A-Za-z0-9_.-], used as a folder
                 "Dataset": ["/data/a.root", ...],      # a list of files, or a DID string
                 "Query": Query(...) | "<JSON>" | [...],  # validated locally before any submit
                 "Format": "parquet"}]}                 # or "arrow" or "root-file"

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
- Every output format loads into awkward (:mod:`delivery.client.load`):
  ``output="arrays"`` reads each file in the download pool as it lands and
  converts them to one array once at the end; ``"dask"`` returns lazy arrays,
  one partition per delivered file (:mod:`delivery.client.lazy`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from delivery.client.client import (
    Client,
    DeliveryFailed,
    FileFailure,
    request_body,
)
from delivery.client.load import combine, load_file, read_part
from delivery.client.progress import make_progress
from delivery.client.session import Run, file_order, plan_samples
from delivery.selection import parse_selection

V = TypeVar("V")


class Delivery(Mapping[str, V], Generic[V]):
    """Sample name -> result (``ak.Array``, ``dask_awkward.Array`` or a list of paths),
    plus ``failures`` and the ``request_ids`` that produced them."""

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


class DeliveryStream:
    """``(sample name, ak.Array)`` per file as it lands (one file in memory at a time).

    Iterate once. ``failures`` is complete when the iteration has ended; with
    ``fail_if_incomplete`` the end raises :class:`DeliveryFailed` instead.
    Files in ``cleanup`` (a private temporary folder) are deleted once loaded;
    files in the local cache are kept.
    """

    def __init__(self, run: Run, fail_if_incomplete: bool, cleanup: Path | None,
                 client: Client | None = None,
                 formats: Mapping[str, str] | None = None) -> None:
        self._run, self._strict, self._cleanup = run, fail_if_incomplete, cleanup
        self._formats = dict(formats or {})  # sample -> Format, for files named oddly
        self._client = client  # closed at the end when the stream owns it
        self.failures: list[FileFailure] = []
        self.request_ids = dict(run.request_ids)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        try:
            for event in self._run:
                self.failures.extend(event.failures)
                if event.path is not None:
                    array = load_file(event.path, self._formats.get(event.sample))
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


Output = Literal["arrays", "paths", "iterator", "dask"]
OUTPUTS = ("arrays", "paths", "iterator", "dask")


def _check_loadable(samples: list[Mapping[str, Any]], bodies: list[dict[str, Any]]) -> None:
    """One array per file needs one output tree: refuse a multi-tree ROOT output up front
    (Parquet and Arrow outputs hold one tree; the server refuses more)."""
    for sample, body in zip(samples, bodies, strict=True):
        if sample.get("Format", "parquet") != "root-file":
            continue
        trees = {out for q in parse_selection(body["selection"]).tree_queries
                 for _, out in q.trees}
        if len(trees) > 1:
            raise ValueError(f"sample {body['title']}: a root-file output with "
                             f"{len(trees)} trees ({', '.join(sorted(trees))}) cannot be "
                             'one array; use output="paths" and uproot')


def deliver(spec: Mapping[str, Any], *, client: Client | None = None,
            fail_if_incomplete: bool = True, output: Output = "arrays",
            download_workers: int = 4, dest_dir: str | Path | None = None,
            deadline: float | None = None, stall_timeout: float = 900.0,
            grace: float = 10.0, cache: bool = True, ignore_cache: bool = False,
            progress: bool = True) -> Any:
    """Run every sample of ``spec`` and return its data.

    ``output="arrays"``: a :class:`Delivery` of ``{name: ak.Array}`` (files
    concatenated in input order); ``"paths"``: a :class:`Delivery` of
    ``{name: [Path, ...]}``; ``"iterator"``: a :class:`DeliveryStream`;
    ``"dask"``: a :class:`Delivery` of ``{name: dask_awkward.Array}``, one
    partition per file, nothing read until computed (needs the ``dask`` extra).
    Every ``Format`` loads (Parquet, Arrow IPC, ROOT: :mod:`delivery.client.load`).
    Files go to ``dest_dir/<name>/`` if given, else (with ``cache``) to the
    entry's stable folder in the local cache (:mod:`delivery.client.cache`),
    else to a new temporary folder (kept for ``"paths"`` and ``"dask"``).
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
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    samples = spec.get("Sample") if isinstance(spec, Mapping) else None
    if not isinstance(samples, list) or not samples:
        raise ValueError('spec must be {"Sample": [sample, ...]} with at least one sample')
    bodies = [request_body(s) for s in samples]  # validate everything before any HTTP call
    names = [b["title"] for b in bodies]
    if len(set(names)) != len(names):
        raise ValueError("sample Names must be unique")
    if output != "paths":
        _check_loadable(samples, bodies)
    if output == "dask":
        from delivery.client.lazy import require_dask

        require_dask()  # before anything is submitted
    formats = {b["title"]: b["result-format"] for b in bodies}
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
        plans = plan_samples(client.http.base_url, samples, bodies, dest_dir, cache, ignore_cache)
        for plan in plans:
            if plan.dest == Path():
                tmp = tmp or Path(tempfile.mkdtemp(prefix="delivery-"))
                plan.dest = tmp / plan.name
        own_dest = tmp if output in ("arrays", "iterator") else None

        read_lock = threading.Lock()

        def load(path: Path, name: str) -> Any:
            # One read at a time: pyarrow parallelizes each read itself, and concurrent
            # reads only fought over the cores (bench/bench_client.py: 10-20% more CPU
            # for no gain); the other pool threads go on downloading meanwhile.
            with read_lock:
                return read_part(path, formats[name])

        run = Run(client, plans, download_workers, follow_args, make_progress(progress),
                  load=load if output == "arrays" else None)
        if output == "iterator":
            stream = DeliveryStream(run, fail_if_incomplete, own_dest,
                                    client if owned else None, formats)
            owned = False  # the stream closes it
            own_dest = None  # and cleans up
            return stream
        files: dict[str, dict[Any, Path]] = {name: {} for name in run.request_ids}
        loaded: dict[str, dict[Any, Any]] = {name: {} for name in run.request_ids}
        failures: list[FileFailure] = []
        for event in run:
            failures.extend(event.failures)
            if event.path is not None and event.item is not None:
                files[event.sample][event.item["file-id"]] = event.path
                loaded[event.sample][event.item["file-id"]] = event.array
        if failures and fail_if_incomplete:
            raise DeliveryFailed(failures)
        order = {name: sorted(got, key=file_order) for name, got in files.items()}
        ordered = {name: [files[name][k] for k in keys] for name, keys in order.items()}
        if output == "paths":
            return Delivery(ordered, failures, run.request_ids)
        if output == "dask":
            from delivery.client.lazy import to_dask

            return Delivery({name: to_dask(paths, formats[name])
                             for name, paths in ordered.items()}, failures, run.request_ids)
        # Files were read as they landed; one conversion per sample, in file order.
        arrays = {name: combine([loaded[name][k] if loaded[name][k] is not None
                                 else load(files[name][k], name) for k in keys])
                  for name, keys in order.items()}
        return Delivery(arrays, failures, run.request_ids)
    finally:
        if owned:
            client.close()
        if own_dest is not None and output == "arrays":
            shutil.rmtree(own_dest, ignore_errors=True)

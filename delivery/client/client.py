"""The client of one service: submit, follow with the long poll, download safely.

Contracts:

- :meth:`Client.follow` uses the long poll only; it ends when the request is
  final and (for ``Complete``) the counts add up, and raises
  :class:`DeliveryStalled` if they do not within ``grace`` seconds, if nothing
  changes for ``stall_timeout`` seconds, or after ``deadline`` seconds.
- :meth:`Client.download` writes to a hidden temporary file in ``dest_dir``,
  checks its size and SHA-256 against the server's and only then renames it into place:
  a partial file is never visible under its final name.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from delivery.client.http import Http
from delivery.client.query import selection_json
from delivery.client.transfer import download
from delivery.errors import PermanentError, TransientError

FINAL = ("Complete", "Fatal", "Canceled", "Bad Dataset")
FORMATS = ("parquet", "root-file", "arrow")
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class FileFailure:
    """One file (``path``) or a whole request (``path is None``) that gave no output."""

    sample: str
    path: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.sample}: {self.path or 'whole request'}: {self.reason}"


class DeliveryFailed(PermanentError):
    """Some files (or whole requests) failed; ``failures`` lists each with its reason."""

    def __init__(self, failures: list[FileFailure]) -> None:
        self.failures = list(failures)
        super().__init__(f"{len(failures)} failure(s): " + "; ".join(map(str, failures)))


class DeliveryStalled(TransientError):
    """The server made no progress in time, or reports counts that never add up."""


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _counts(status: Mapping[str, Any]) -> tuple[Any, ...]:
    return (status.get("status"), status.get("files"), status.get("files-completed"),
            status.get("files-failed"))


class Client:
    """One service at ``url``; thread-safe. Use as a context manager or call ``close``.

    ``token`` (default ``$DELIVERY_TOKEN``) is a refresh token from ``delivery tokens
    issue``, renewed into access tokens as needed, or any bearer token.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.25) -> None:
        if token is None:
            token = os.environ.get("DELIVERY_TOKEN") or None
        self.http = Http(url, token=token, timeout=timeout, retries=retries, backoff=backoff)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, sample: Mapping[str, Any]) -> str:
        """Submit one sample of a spec (validated locally first); its request id."""
        body = request_body(sample)
        answer = self.http.request("POST", "/servicex/transformation", json=body)
        return str(answer["request_id"])

    def status(self, request_id: str) -> dict[str, Any]:
        """The ServiceX status object of the request."""
        found: dict[str, Any] = self.http.get(f"/servicex/transformation/{request_id}")
        return found

    def failures(self, request_id: str) -> list[dict[str, Any]]:
        """Result items of the failed files, each with ``file-path`` and ``error``."""
        answer = self.http.get(f"/api/v1/requests/{request_id}/files", status="failure")
        return list(answer["files"])

    def list_requests(self) -> list[dict[str, Any]]:
        """The status objects of every request the service knows."""
        return list(self.http.get("/servicex/transformation")["requests"])

    def results(self, request_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """Result items of the request's files; ``status`` is ``success``, ``failure`` or all."""
        params = {"status": status} if status is not None else {}
        answer = self.http.get(f"/api/v1/requests/{request_id}/files", **params)
        return list(answer["files"])

    def cancel(self, request_id: str) -> str:
        """Cancel a request that has not finished; the server's message.

        Cancelling is idempotent on the server (an already canceled request
        answers 200), so this uses the protocol's ``GET`` form, which the HTTP
        layer may retry safely. A request that already ended otherwise is a
        :class:`~delivery.client.http.ServerRefused` with status 409.
        """
        answer = self.http.get(f"/servicex/transformation/{request_id}/cancel")
        return str(answer.get("message", f"canceled {request_id}"))

    def delete(self, request_id: str) -> str:
        """Delete a request, its results and its outputs (idempotent); the server's message."""
        answer = self.http.request("DELETE", f"/servicex/transformation/{request_id}")
        return str(answer.get("message", f"deleted {request_id}"))

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets (DIDs and file lists) the service has looked up."""
        return list(self.http.get("/servicex/datasets")["datasets"])

    def dataset(self, dataset_id: int | str) -> dict[str, Any]:
        """One dataset by its numeric id."""
        found: dict[str, Any] = self.http.get(f"/servicex/datasets/{dataset_id}")
        return found

    def follow(self, request_id: str, *, poll: float = 30.0, deadline: float | None = None,
               stall_timeout: float = 900.0, grace: float = 10.0) -> Iterator[dict[str, Any]]:
        """Yield each result item once, as soon as it exists, until the request is final.

        Raises :class:`DeliveryStalled` after ``deadline`` seconds in all, after
        ``stall_timeout`` seconds without a new result or count change, or when a
        ``Complete`` request's counts do not add up for ``grace`` seconds.
        """
        start = time.monotonic()
        end = start + deadline if deadline is not None else None
        seen: set[Any] = set()
        after: datetime | None = None
        last_change, last_counts = start, None
        odd_since: float | None = None
        while True:
            now = time.monotonic()
            if end is not None and now >= end:
                raise DeliveryStalled(f"request {request_id} not finished after "
                                      f"{deadline:g} s (deadline)")
            if now - last_change > stall_timeout:
                raise DeliveryStalled(f"request {request_id} made no progress for "
                                      f"{stall_timeout:g} s; last status {last_counts}")
            wait = max(0.0, min(poll, (end - now) if end is not None else poll,
                                stall_timeout - (now - last_change) + 0.01))
            params: dict[str, Any] = {"timeout": f"{wait:.3f}"}
            if after is not None:
                params["after"] = after.isoformat()
            news = self.http.request("GET", f"/api/v1/requests/{request_id}/wait",
                                     params=params, timeout=wait + self.http.timeout)
            status = news["status"]
            items = list(news["results"])
            if status["status"] in FINAL:
                # One full sweep: nothing can be missed even if two results share a time.
                items += self.http.get(f"/servicex/transformation/{request_id}/results")[
                    "results"]
            for item in items:
                when = _when(item["created_at"])
                after = when if after is None or when > after else after
                if item["file-id"] in seen:
                    continue
                seen.add(item["file-id"])
                last_change = time.monotonic()
                yield item
            if _counts(status) != last_counts:
                last_counts, last_change = _counts(status), time.monotonic()
            if status["status"] not in FINAL:
                continue
            done = (status["files-completed"] or 0) + (status["files-failed"] or 0)
            if status["status"] != "Complete" or (done == status["files"] and len(seen) >= done):
                return
            odd_since = odd_since if odd_since is not None else time.monotonic()
            if time.monotonic() - odd_since > grace:
                raise DeliveryStalled(
                    f"request {request_id} is Complete but its counts do not add up: "
                    f"{status['files-completed']} completed + {status['files-failed']} failed "
                    f"of {status['files']} files, {len(seen)} results seen")
            time.sleep(min(0.5, grace))

    def download(self, request_id: str, item: Mapping[str, Any], dest_dir: str | Path, *,
                 attempts: int = 3) -> Path:
        """Download one successful result into ``dest_dir``; its final path.

        Size and SHA-256 are verified while it streams, before it is renamed into
        place; a presigned URL is fetched straight from the object store
        (:func:`delivery.client.transfer.download` says how, and what is retried).
        """
        return download(self.http, request_id, item, dest_dir, attempts=attempts)


def request_body(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The ServiceX request body for one sample; validates the query locally.

    Raises ``ValueError`` for a malformed sample and
    :class:`~delivery.errors.SelectionError` for a bad query.
    """
    if not isinstance(sample, Mapping):
        raise ValueError(f"a sample must be a mapping, not {type(sample).__name__}")
    unknown = sorted(set(sample) - {"Name", "Dataset", "Query", "Format"})
    if unknown:
        raise ValueError(f"unknown sample key {unknown[0]!r}; use Name, Dataset, Query, Format")
    name = sample.get("Name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"sample Name must match {_NAME.pattern}, not {name!r}")
    fmt = sample.get("Format", "parquet")
    if fmt not in FORMATS:
        raise ValueError(f"sample {name}: Format must be one of {', '.join(FORMATS)}")
    if "Query" not in sample:
        raise ValueError(f"sample {name}: Query is required")
    selection = selection_json(sample["Query"])
    dataset = sample.get("Dataset")
    body: dict[str, Any] = {"title": name, "selection": selection, "codegen": "uproot-raw",
                            "result-destination": "object-store", "result-format": fmt}
    if isinstance(dataset, str) and dataset:
        body["did"] = dataset
    elif isinstance(dataset, list | tuple) and dataset and all(
            isinstance(f, str | os.PathLike) for f in dataset):
        body["file-list"] = [os.fspath(f) for f in dataset]
    else:
        raise ValueError(f"sample {name}: Dataset must be a DID string or a non-empty list "
                         "of file paths")
    return body

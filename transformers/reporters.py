"""Where a worker's verdicts go.

- :class:`StoreReporter`: straight into the request store (the embedded default,
  where the serving process owns the database).
- :class:`HttpReporter`: to the API's internal endpoints with the service
  credential, so workers need no database access at all.

Both are idempotent on (request, file): a repeated report changes nothing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from delivery.errors import TransientError
from delivery.messages import FileReport

FINAL_STATUSES = ("Complete", "Fatal", "Canceled", "Bad Dataset")

__all__ = ["StoreReporter", "HttpReporter"]


class StoreReporter:
    def __init__(self, store: Any, on_record: Any = None) -> None:
        self.store = store
        self.on_record = on_record

    def record(self, report: FileReport) -> None:
        self.store.record(report)
        if self.on_record is not None:
            self.on_record()

    def pending(self, request_id: str, file_id: int) -> bool:
        row = self.store.get(request_id)
        if row is None or row.status in FINAL_STATUSES:
            return False
        return not self.store.file_done(request_id, file_id)


class HttpReporter:
    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.api_url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise TransientError(f"API answered {err.code} to {method} {path}") from None
        except (urllib.error.URLError, OSError) as err:
            raise TransientError(f"API unreachable at {self.api_url}: {err}") from None

    def record(self, report: FileReport) -> None:
        self._call("POST", "/internal/results", report.to_json())

    def pending(self, request_id: str, file_id: int) -> bool:
        answer = self._call("GET", f"/internal/requests/{request_id}/files/{file_id}")
        return bool(answer and answer.get("pending"))

    def heartbeat(self, snapshot: dict[str, Any]) -> None:
        """Tell the API this worker is alive and what it is on (transformers.activity)."""
        self._call("POST", "/internal/heartbeat", snapshot)

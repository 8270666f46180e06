"""The client's HTTP layer: timeouts always, retries only where they are safe.

Contract:

- Every call has a timeout (``timeout`` seconds per connect/read/write unless a
  call asks for more, e.g. a long poll).
- Idempotent calls (GET, DELETE) are retried with exponential backoff on
  connection errors and on 5xx answers; the last failure is raised.
- POST is retried only when the connection could not be opened at all (the
  request never reached the server), never after it may have been received.
- Errors become our error tree, with the server's one-line ``message``:
  4xx -> :class:`ServerRefused` (a :class:`~delivery.errors.PermanentError`);
  5xx, connection and timeout failures -> :class:`~delivery.errors.TransientError`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from delivery.client.auth import bearer_auth
from delivery.errors import PermanentError, TransientError

__all__ = ["ServerRefused", "Http"]

_RETRY_STATUS = frozenset({500, 502, 503, 504})
_IDEMPOTENT = frozenset({"GET", "DELETE", "HEAD"})


class ServerRefused(PermanentError):
    """The server answered 4xx: the request is wrong, repeating it cannot help."""

    def __init__(self, reason: str, *, status: int) -> None:
        self.status = status
        super().__init__(reason)


def _message(response: httpx.Response) -> str:
    """The server's one-line message, or a short excerpt of whatever it sent."""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    except ValueError:
        pass
    text = response.text.strip()[:200]
    return text or response.reason_phrase or "no message"


def raise_for(response: httpx.Response, what: str) -> None:
    """Raise our error for a non-2xx/3xx ``response``; ``what`` names the call."""
    code = response.status_code
    if code < 400:
        return
    if not response.is_stream_consumed:
        response.read()
    text = f"{what}: HTTP {code}: {_message(response)}"
    if code < 500:
        raise ServerRefused(text, status=code)
    raise TransientError(text)


class Http:
    """A base URL plus an ``httpx.Client``; safe to share between threads.

    ``retries`` is the number of extra attempts after the first; the waits are
    ``backoff * 2**n`` seconds.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.25) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the service URL must start with http:// or https://, "
                             f"not {base_url[:40]!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        # httpx drops the Authorization header on a redirect to another origin
        # (the presigned download URL), so the token never leaves our server.
        self._client = httpx.Client(base_url=self.base_url, auth=bearer_auth(token),
                                    timeout=httpx.Timeout(timeout))

    def close(self) -> None:
        self._client.close()

    def _attempts(self, method: str) -> Iterator[int]:
        for n in range(self.retries + 1):
            if n:
                time.sleep(self.backoff * 2 ** (n - 1))
            yield n

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, timeout: float | None = None) -> Any:
        """One JSON call; returns the decoded body. Retries as the module says."""
        what = f"{method} {path}"
        last: Exception | None = None
        for n in self._attempts(method):
            try:
                response = self._client.request(
                    method, path, params=params, json=json,
                    timeout=httpx.Timeout(timeout or self.timeout))
            except httpx.ConnectError as err:
                last = TransientError(f"{what}: cannot connect to {self.base_url}: {err}")
                continue
            except httpx.TransportError as err:
                last = TransientError(f"{what}: {type(err).__name__}: {err}")
                if method in _IDEMPOTENT:
                    continue
                raise last from None
            if response.status_code in _RETRY_STATUS and method in _IDEMPOTENT \
                    and n < self.retries:
                continue
            raise_for(response, what)
            try:
                return response.json()
            except ValueError:
                raise TransientError(f"{what}: the server answered something that is not "
                                     f"JSON: {response.text[:80]!r}") from None
        assert last is not None
        raise last

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    @contextlib.contextmanager
    def stream(self, path: str, *, follow_redirects: bool = True) -> Iterator[httpx.Response]:
        """A GET whose body is read by the caller; one attempt.

        A 4xx/5xx answer raises as :func:`raise_for` says (a redirect that is not
        followed is handed over as it is); connection trouble is a
        :class:`TransientError`. Callers retry the whole transfer.
        """
        what = f"GET {path}"
        try:
            with self._client.stream("GET", path,
                                     follow_redirects=follow_redirects) as response:
                raise_for(response, what)
                yield response
        except httpx.TransportError as err:
            raise TransientError(f"{what}: {type(err).__name__}: {err}") from None

"""The client's side of authentication: refresh token in, short-lived access token out.

A token that reads ``dlv_...`` is a refresh token (what ``delivery tokens issue``
prints, and what ``servicex.yaml`` holds as ``token``). It is exchanged at
``POST /token/refresh`` for an access JWT, which is renewed when under 60 s of
its life remain and once after a 401. Any other token is sent as it is, as a
bearer token. The JWT's ``exp`` is read without checking the signature: the
server checks it, and the client only needs to know when to renew.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Generator

import httpx

__all__ = ["RefreshAuth", "bearer_auth"]

_RENEW_BEFORE = 60.0


def _expiry(access: str) -> float:
    try:
        payload = access.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0  # unreadable: renew before every call rather than send a stale one


class RefreshAuth(httpx.Auth):
    # Not ``requires_response_body``: httpx would then read every answer whole,
    # downloads included. Only the refresh answer is read, in :meth:`_take`.

    def __init__(self, refresh_token: str) -> None:
        self._refresh = refresh_token
        self._access: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def _refresh_request(self, request: httpx.Request) -> httpx.Request:
        url = request.url.copy_with(path="/token/refresh", query=None)
        return httpx.Request("POST", url, headers={
            "Authorization": f"Bearer {self._refresh}"})

    def _take(self, response: httpx.Response) -> None:
        response.read()
        if response.status_code != 200:
            # Leave the call unauthenticated: the server's 401 then says why, in one line.
            self._access, self._expires = None, 0.0
            return
        with self._lock:
            self._access = str(response.json()["access_token"])
            self._expires = _expiry(self._access)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            stale = self._access is None or self._expires - time.time() < _RENEW_BEFORE
        if stale:
            self._take((yield self._refresh_request(request)))
        if self._access:
            request.headers["Authorization"] = f"Bearer {self._access}"
        response = yield request
        if response.status_code == 401:
            self._take((yield self._refresh_request(request)))
            if self._access:
                request.headers["Authorization"] = f"Bearer {self._access}"
                yield request


def bearer_auth(token: str | None) -> httpx.Auth | None:
    """The httpx auth for ``token``: refreshing for ``dlv_`` tokens, plain bearer otherwise."""
    if not token:
        return None
    if token.startswith("dlv_"):
        return RefreshAuth(token)
    return _Bearer(token)


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

"""Our client with auth on: a refresh token in, access tokens renewed as needed, isolation kept."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import jwt
import pytest
import uproot
from stack import Stack, embedded_stack

from delivery import Client, deliver
from delivery.client.auth import RefreshAuth
from delivery.client.http import ServerRefused
from transformers.generate import generate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("client-auth")
    generate(data / "nano.root", 3000, seed=3, basket_entries=1000)
    with embedded_stack(tmp_path_factory.mktemp("state"), [data], workers=1, auth=True) as s:
        s.env["INPUT"] = str(data / "nano.root")
        yield s


def spec(stack: Stack, name: str) -> dict[str, object]:
    query = {"treename": "Events", "filter_name": ["nMuon"], "cut": "nMuon >= 2"}
    return {"Sample": [{"Name": name, "Dataset": [stack.env["INPUT"]], "Query": query,
                        "Format": "parquet"}]}


def test_refresh_token_delivers_and_isolates(stack: Stack, tmp_path: Path) -> None:
    with Client(stack.url, stack.tokens["alice"]) as alice:
        got = deliver(spec(stack, "mine"), client=alice, progress=False, cache=False)
        request_id = alice.list_requests()[0]["request_id"]
    expected = uproot.open(stack.env["INPUT"])["Events"].arrays(["nMuon"])
    assert ak.to_list(got["mine"].nMuon) == ak.to_list(expected.nMuon[expected.nMuon >= 2])
    with Client(stack.url, stack.tokens["bob"]) as bob:
        assert bob.list_requests() == []
        with pytest.raises(ServerRefused) as err:
            bob.status(request_id)
        assert err.value.status == 404
    with Client(stack.url, stack.tokens["admin"]) as admin:
        assert admin.status(request_id)["request_id"] == request_id


def test_without_or_with_a_bad_token_is_one_clear_error(stack: Stack) -> None:
    for token in (None, "dlv_000000000000_" + "y" * 43):
        with Client(stack.url, token or "") as nobody, pytest.raises(ServerRefused) as err:
            nobody.list_requests()
        assert err.value.status == 401
        assert "refresh" in str(err.value) or "authentication" in str(err.value)


def test_an_expired_access_token_is_renewed_after_the_401(stack: Stack) -> None:
    with Client(stack.url, stack.tokens["alice"]) as alice:
        auth = alice.http._client.auth
        assert isinstance(auth, RefreshAuth)
        alice.list_requests()
        # The server now refuses the cached token (expired under its signature check).
        auth._access = jwt.encode({"sub": "alice", "exp": time.time() - 1, "typ": "access"},
                                  stack.services.settings.auth_secret, algorithm="HS256")
        auth._expires = time.time() + 3600  # the client believes it is still good
        assert isinstance(alice.list_requests(), list)
        assert auth._access is not None and auth._expires > time.time() + 60

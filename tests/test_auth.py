"""Authentication and per-user isolation, over every route in the URL map, on the real stack.

Alice owns a finished request. For each route and method the table says what
an anonymous caller, Bob (another user), Alice and an admin get. A route that
is not classified fails the test, so a new route cannot skip isolation. Every
response of the run is scanned for the configured secrets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from stack import Stack, real_stack

from api.app import create_app
from api.auth import check_settings
from delivery.config import Settings
from transformers.generate import generate

pytestmark = pytest.mark.integration

SELECTION = json.dumps([{"treename": "Events", "filter_name": ["nMuon", "Muon_pt"],
                         "cut": "nMuon >= 1"}])
PUBLIC = ("/token/refresh", "/healthz", "/readyz", "/static/", "/login", "/logout",
          "/openapi.json")
SEEN: list[httpx.Response] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("auth-inputs")
    for i in range(2):
        generate(data / f"nano{i}.root", 2000, seed=i, basket_entries=1000)
    with real_stack(tmp_path_factory.mktemp("auth"), [data], s3_endpoint, workers=1,
                    auth=True) as s:
        s.env["INPUTS"] = str(data)
        yield s


def call(stack: Stack, method: str, path: str, user: str | None = None,
         **kwargs: Any) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if user:
        headers.update(stack.headers(user))
    got = httpx.request(method, stack.url + path, headers=headers, timeout=30,
                        follow_redirects=False, **kwargs)
    SEEN.append(got)
    return got


def submit(stack: Stack, user: str) -> str:
    files = sorted(str(p) for p in Path(stack.env["INPUTS"]).glob("*.root"))
    body = {"title": f"{user}'s", "selection": SELECTION, "codegen": "uproot-raw",
            "result-destination": "object-store", "result-format": "parquet",
            "file-list": files}
    got = call(stack, "POST", "/servicex/transformation", user, json=body)
    assert got.status_code == 200, got.text
    request_id: str = got.json()["request_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = call(stack, "GET", f"/servicex/transformation/{request_id}", user).json()
        if status["status"] == "Complete":
            assert status["files-completed"] == 2, status
            return request_id
        time.sleep(0.3)
    raise AssertionError(f"{request_id} did not complete: {status}")


def fill(rule: Any, request_id: str, dataset_id: int) -> str:
    values = {"request_id": request_id, "file_id": 0, "dataset_id": dataset_id,
              "filename": "x.css", "path": "x"}
    missing = set(rule.arguments) - set(values)
    assert not missing, f"route {rule.rule} has arguments this table does not know: {missing}"
    return str(rule.build(values, append_unknown=False)[1])


def kind(path: str) -> str:
    if path.startswith(PUBLIC):
        return "public"
    if path.startswith(("/internal/", "/metrics")):
        return "operator"
    if "<request_id>" in path:
        return "owned"
    return "user"


def test_every_route_is_isolated(stack: Stack) -> None:
    alice = submit(stack, "alice")
    dataset_id = stack.services.store.get(alice).dataset_id
    app = create_app(stack.services)
    table = [(rule, method) for rule in app.url_map.iter_rules()
             for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    assert len(table) >= 20, [r.rule for r, _ in table]
    destructive = []
    for rule, method in table:
        path = fill(rule, alice, dataset_id)
        k = kind(rule.rule)
        body = {} if method in ("POST", "PUT") else None
        anon = call(stack, method, path, json=body)
        if k == "public":
            assert anon.status_code != 500, (rule.rule, anon.text)
            continue
        # Browsers are sent to the login page; API callers get a 401.
        assert anon.status_code in (401, 302, 303), (rule.rule, method, anon.status_code)
        if k == "operator":
            bob = call(stack, method, path, "bob", json=body)
            assert bob.status_code in (401, 403), (rule.rule, method, bob.status_code)
            continue
        if k == "owned":
            bob = call(stack, method, path, "bob", json=body)
            assert bob.status_code == 404, (rule.rule, method, bob.status_code, bob.text)
            if method in ("DELETE", "POST"):
                destructive.append((rule, method, path))
                continue
            for user in ("alice", "admin"):
                got = call(stack, method, path, user)
                assert got.status_code != 404 or "/files/" in rule.rule, (rule.rule, user)
                assert got.status_code < 500, (rule.rule, user, got.text)
    # Bob's attempts changed nothing: the request is still there, still Complete.
    assert stack.services.store.get(alice).status == "Complete"
    for rule, method, path in destructive:
        got = call(stack, method, path, "alice", json={})
        assert got.status_code in (200, 302, 303, 409), (rule.rule, method, got.text)


def test_lists_show_only_ones_own(stack: Stack) -> None:
    alice, bob = submit(stack, "alice"), submit(stack, "bob")
    listed = {u: {r["request_id"] for r in call(stack, "GET", "/servicex/transformation",
                                                  u).json()["requests"]}
              for u in ("alice", "bob", "admin")}
    assert alice in listed["alice"] and bob not in listed["alice"]
    assert bob in listed["bob"] and alice not in listed["bob"]
    assert {alice, bob} <= listed["admin"]
    # The owner can download; the other user cannot even learn the file exists.
    files = call(stack, "GET", f"/api/v1/requests/{alice}/files", "alice").json()["files"]
    assert len(files) == 2, files
    first = f"/api/v1/requests/{alice}/files/{files[0]['file-id']}/download"
    assert call(stack, "GET", first, "alice").status_code in (200, 307)
    assert call(stack, "GET", first, "bob").status_code == 404


def test_tokens(stack: Stack) -> None:
    store, settings = stack.services.store, stack.services.settings
    bad = [("", 401), ("Bearer nonsense", 401), ("Bearer dlv_000000000000_" + "x" * 43, 401)]
    for header, code in bad:
        got = call(stack, "POST", "/token/refresh", headers={"Authorization": header})
        assert got.status_code == code, got.text
    claims = jwt.decode(stack.access("alice"), options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["exp"] > time.time() + 60
    # Forged (wrong key), expired and refresh-token-as-access are all refused.
    forged = jwt.encode({"sub": "admin", "admin": True, "exp": time.time() + 600,
                         "typ": "access"}, "not-the-secret-" * 4, algorithm="HS256")
    expired = jwt.encode({"sub": "alice", "exp": time.time() - 5, "typ": "access"},
                         settings.auth_secret, algorithm="HS256")
    none_alg = jwt.encode({"sub": "admin", "admin": True, "exp": time.time() + 600,
                           "typ": "access"}, None, algorithm="none")
    for token in (forged, expired, none_alg, stack.tokens["alice"]):
        got = call(stack, "GET", "/servicex/transformation",
                   headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 401, got.text
    assert "expired" in call(stack, "GET", "/servicex/transformation", headers={
        "Authorization": f"Bearer {expired}"}).json()["message"]
    # Revocation stops the next refresh at once.
    spare = store.issue_token("bob", label="spare")
    assert call(stack, "POST", "/token/refresh",
                headers={"Authorization": f"Bearer {spare}"}).status_code == 200
    assert store.revoke_token(spare)
    assert call(stack, "POST", "/token/refresh",
                headers={"Authorization": f"Bearer {spare}"}).status_code == 401


def test_no_response_carries_a_secret(stack: Stack) -> None:
    # Runs last in this module: it scans every response the tests above received.
    settings = stack.services.settings
    secrets = {"S3 write secret": settings.s3_secret_key,
               "auth secret": settings.auth_secret,
               "service token": settings.service_token}
    assert all(secrets.values()) and len(SEEN) > 50
    for got in SEEN:
        text = got.text + json.dumps(dict(got.headers))
        for name, value in secrets.items():
            assert value not in text, f"{name} in the answer to {got.request.url}"
        if got.headers.get("Content-Type", "").startswith("application/json"):
            body = got.json()
            if isinstance(body, dict) and "minio-access-key" in body:
                assert body["minio-access-key"] == settings.s3_read_access_key


@pytest.mark.parametrize("secret", [None, "", "changeme", "short", "a" * 40])
def test_refuses_to_start_with_a_weak_secret(secret: str | None) -> None:
    env = {"DELIVERY_AUTH": "on", "DELIVERY_STATE_DIR": "/nonexistent"}
    if secret is not None:
        env["DELIVERY_AUTH_SECRET"] = secret
    with pytest.raises(ValueError, match="DELIVERY_AUTH_SECRET"):
        check_settings(Settings.from_env(env))


def test_starts_with_a_strong_secret() -> None:
    check_settings(Settings.from_env({"DELIVERY_AUTH": "on", "DELIVERY_STATE_DIR": "/x",
                                      "DELIVERY_AUTH_SECRET": "k3J9-qLz_0Pw8vRt2Yx7" * 2}))

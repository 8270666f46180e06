"""schemathesis against the API's own OpenAPI document, on live stacks.

Three stacks: the embedded default with auth off, the same with auth on (calls
carry alice's access JWT), and the real stack (PostgreSQL, whose text refuses NUL
characters that SQLite takes, RabbitMQ, S3).

Every operation the document lists is called with generated inputs (valid ones
and, schemathesis's negative mode, invalid ones) and must never answer a 5xx
(``not_a_server_error``). Internal operations get the service credential, so
their bodies are really parsed. The document is also checked against the URL
map: a route that is neither documented nor listed as undocumented fails.

To reach past the 404 of a random id, the test's copy of the document (not the
published one) offers, besides any string, the id of a live completed request
for the read operations, a sacrificial one for cancel and delete, real input
files for a file list, and a valid submission as an explicit example.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from stack import Stack, embedded_stack, real_stack

from api.openapi import OPERATIONS, UNDOCUMENTED, openapi_path
from transformers.generate import generate

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 20  # per operation and stack: ~1,200 calls each
SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_pt", "nMuon"],
                         "cut": "MET_pt > 10"}])
COUNTS: dict[tuple[str, str], int] = {}
PASSED: set[tuple[str, str]] = set()  # operations that answered 2xx at least once


@dataclasses.dataclass
class Live:
    kind: str  # embedded, embedded-auth (alice's token) or real (PostgreSQL and S3)
    stack: Stack
    token: str  # the service credential
    done: str  # a completed request (read operations)
    victim: str  # a request cancel and delete may hit
    files: list[str]
    doc: dict[str, Any]
    auth: bool
    access: str  # alice's access JWT (auth on), valid for the whole run

    def headers(self, path: str) -> dict[str, str]:
        """The credential a real caller of ``path`` holds (auth on: alice's)."""
        if path.startswith("/internal/"):
            return {"Authorization": f"Bearer {self.token}"}
        if not self.auth:
            return {}
        if path == "/token/refresh":
            return {"Authorization": f"Bearer {self.stack.tokens['alice']}"}
        return {"Authorization": f"Bearer {self.access}"}


def _submit(stack: Stack, headers: dict[str, str], files: list[str], **extra: Any) -> str:
    body = {"title": "fuzz", "selection": SELECTION, "result-format": "parquet",
            "file-list": files, **extra}
    got = httpx.post(f"{stack.url}/servicex/transformation", json=body, headers=headers,
                     timeout=30)
    assert got.status_code == 200, got.text
    return str(got.json()["request_id"])


def _final(stack: Stack, headers: dict[str, str], request_id: str) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{stack.url}/api/v1/requests/{request_id}/wait?timeout=5",
                           headers=headers, timeout=30).json()["status"]["status"]
        if status in ("Complete", "Fatal", "Canceled", "Bad Dataset"):
            return str(status)
    raise AssertionError(f"{request_id} not final after 120 s")


@contextlib.contextmanager
def _stack(kind: str, request: pytest.FixtureRequest, tmp: Path, data: Path) -> Iterator[Stack]:
    if kind == "real":  # PostgreSQL, RabbitMQ, moto S3, a worker subprocess
        with real_stack(tmp, [data], request.getfixturevalue("s3_endpoint"), workers=1) as s:
            yield s
        return
    with embedded_stack(tmp, [data], workers=2, auth=kind == "embedded-auth") as s:
        # The embedded default has no service credential (its workers write to the store
        # directly); give it one so /internal/* parse what the fuzzer sends.
        s.services.settings = dataclasses.replace(s.services.settings,
                                                  service_token=secrets.token_urlsafe(24))
        yield s


@pytest.fixture(scope="module", params=["embedded", "embedded-auth", "real"])
def live(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    kind: str = request.param
    data = tmp_path_factory.mktemp("fuzz-inputs")
    files = []
    for i in range(2):
        generate(data / f"nano{i}.root", 2000, seed=i, basket_entries=1000)
        files.append(str(data / f"nano{i}.root"))
    with _stack(kind, request, tmp_path_factory.mktemp("fuzz"), data) as stack:
        auth = bool(stack.tokens)
        headers = stack.headers("alice") if auth else {}
        done = _submit(stack, headers, files)
        assert _final(stack, headers, done) == "Complete"
        victim = _submit(stack, headers, files[:1], reuse=False)
        doc = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
        token = str(stack.services.settings.service_token)
        access = stack.access("alice") if auth else ""
        yield Live(kind, stack, token, done, victim, files, doc, auth, access)
        for request_id in (done, victim):  # the shared moto server keeps outputs in memory
            stack.services.objects.delete_bucket(request_id)


def _either(value: Any, schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"enum": [value]}, schema]}


def enriched(live: Live) -> dict[str, Any]:
    """The test's copy of the document: live ids and files offered besides any value."""
    doc = json.loads(json.dumps(live.doc))
    for path, item in doc["paths"].items():
        for method, op in item.items():
            target = live.victim if "cancel" in path or method == "delete" else live.done
            for p in op.get("parameters", []):
                if p["name"] == "request_id":
                    p["schema"] = _either(target, p["schema"])
                elif p["name"] == "file_id":
                    p["schema"] = _either(0, p["schema"])
    schemas = doc["components"]["schemas"]
    body = schemas["TransformRequest"]["properties"]
    body["file-list"]["items"] = _either(live.files[0], body["file-list"]["items"])
    schemas["TransformRequest"]["example"] = {
        "title": "fuzz", "selection": SELECTION, "result-format": "parquet",
        "file-list": live.files}
    schemas["FileReport"]["properties"]["request_id"] = _either(
        live.done, schemas["FileReport"]["properties"]["request_id"])
    return doc


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    schema = schemathesis.openapi.from_dict(enriched(live))
    schema.config.update(base_url=live.stack.url, request_timeout=70)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate, Phase.shrink],
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, live: Live) -> None:
    response = case.call_and_validate(headers=live.headers(case.operation.path),
                                      checks=[not_a_server_error])
    label = (live.kind, f"{case.operation.method.upper()} {case.operation.path}")
    COUNTS[label] = COUNTS.get(label, 0) + 1  # by operation: case.method may differ
    if response.status_code < 300:
        PASSED.add(label)


def test_fuzzing_covered_every_operation(live: Live) -> None:
    documented = {f"{m.upper()} {path}" for path, item in live.doc["paths"].items() for m in item}
    fuzzed = {label for kind, label in COUNTS if kind == live.kind}
    if not fuzzed:
        pytest.skip("run together with test_no_server_errors")
    calls = sum(n for (kind, _), n in COUNTS.items() if kind == live.kind)
    ok = {label for kind, label in PASSED if kind == live.kind}
    print(f"\n{live.kind}: fuzzed {len(fuzzed)} operations with {calls} calls, no 5xx; "
          f"never a 2xx: {sorted(fuzzed - ok)}")
    assert fuzzed == documented
    assert len(fuzzed - ok) <= 2  # the fuzzer got past auth and validation, not only 4xx


def test_nul_characters_are_refused_not_500(live: Live) -> None:
    """PostgreSQL text cannot hold NUL, SQLite can; the fuzzer seldom sends one: every
    operation gets one in each string path and query parameter and in its body."""
    answers = {}
    for path, item in live.doc["paths"].items():
        for method, op in item.items():
            params = op.get("parameters", [])
            url = path
            for p in params:
                if p["in"] == "path":
                    value = "a%00b" if p["schema"].get("type") == "string" else "0"
                    url = url.replace("{" + p["name"] + "}", value)
            query = {p["name"]: "a\x00b" for p in params if p["in"] == "query"}
            body = ({"title": "a\x00b", "selection": "x", "request_id": "a\x00b"}
                    if "requestBody" in op else None)
            got = httpx.request(method.upper(), live.stack.url + url, params=query, json=body,
                                headers=live.headers(path), timeout=30)
            answers[f"{method.upper()} {url}"] = got.status_code
    assert all(code < 500 for code in answers.values()), answers


def test_every_route_is_documented_or_listed(live: Live) -> None:
    from api.app import create_app

    app = create_app(live.stack.services)
    missing, served = [], set()
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (rule.rule, method) in OPERATIONS:
                served.add((openapi_path(rule.rule), method.lower()))
            elif rule.rule not in UNDOCUMENTED:
                missing.append(f"{method} {rule.rule}")
    assert not missing, ("routes neither in api.openapi.OPERATIONS nor UNDOCUMENTED: "
                         f"{missing}")
    published = {(p, m) for p, item in live.doc["paths"].items() for m in item}
    assert published == served
    assert not [r for r in UNDOCUMENTED if (r, "GET") in OPERATIONS]


def test_document_is_valid_openapi(live: Live) -> None:
    doc = live.doc
    assert doc["openapi"].startswith("3.") and doc["paths"]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["message"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "200" in op["responses"], (method, path)
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(part[1:-1] for part in path.split("/") if part.startswith("{")), \
                (method, path)
    schemathesis.openapi.from_dict(doc)  # loads (schemathesis validates the structure)

"""The dashboard over plain HTTP: pages, their JSON, the login cookie, CSRF, isolation,
heartbeats, and a client snippet that really loads the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack import REPO, Stack, embedded_stack

from api.auth import ACCESS_COOKIE, CSRF_HEADER
from api.dashboard import REFRESH_COOKIE
from transformers.generate import generate

SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_pt", "Muon_pt"],
                         "cut": "MET_pt > 15"}])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dashboard-inputs")
    generate(root / "nano.root", 5000, seed=2, basket_entries=1000)
    (root / "corrupt.root").write_bytes(b"<script>alert(1)</script> not ROOT " * 50)
    return root


@pytest.fixture(scope="module")
def open_stack(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("dash-open"), [data_dir], workers=1) as s:
        yield s


@pytest.fixture(scope="module")
def auth_stack(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("dash-auth"), [data_dir], workers=1,
                        auth=True) as s:
        yield s


def submit(stack: Stack, files: list[str], user: str | None = None,
           title: str = "dashboard <b>test</b>", fmt: str = "parquet") -> str:
    headers = stack.headers(user) if user else {}
    answer = httpx.post(stack.url + "/servicex/transformation", headers=headers, timeout=60,
                        json={"title": title, "file-list": files, "selection": SELECTION,
                              "result-format": fmt, "reuse": False})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["request_id"])


def wait_final(stack: Stack, rid: str, user: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        headers = stack.headers(user) if user else {}
        found: dict[str, Any] = httpx.get(f"{stack.url}/servicex/transformation/{rid}",
                                          headers=headers, timeout=30).json()
        if found["status"] in ("Complete", "Fatal", "Canceled", "Bad Dataset"):
            return found
        time.sleep(0.3)
    raise AssertionError(f"{rid} not final")


def test_pages_show_the_request_its_failure_and_escape_everything(open_stack: Stack,
                                                                  data_dir: Path) -> None:
    rid = submit(open_stack, [str(data_dir / "nano.root"), str(data_dir / "corrupt.root")])
    wait_final(open_stack, rid)
    with httpx.Client(base_url=open_stack.url, timeout=30) as web:
        home = web.get("/")
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert rid in home.text and "dashboard &lt;b&gt;test&lt;/b&gt;" in home.text
        assert "<b>test</b>" not in home.text  # titles are escaped, never markup
        page = web.get(f"/requests/{rid}").text
        assert "1 of 2 files done, 1 failed, 0 remaining" in page
        assert "not a ROOT file" in page and "&lt;script&gt;" not in page  # path, not content
        assert "&#34;MET_pt &gt; 15&#34;" in page or "&quot;MET_pt &gt; 15&quot;" in page
        assert "<script>alert" not in page
        detail = web.get(f"/dashboard/api/requests/{rid}").json()
        assert (detail["completed"], detail["failed"], detail["remaining"]) == (1, 1, 0)
        failed = [f for f in detail["files_table"] if f["status"] == "failure"]
        assert len(failed) == 1 and failed[0]["error"].endswith("not a ROOT file")
        assert detail["events_in"] == 5000 and detail["series"][-1][1] == 5000
        assert web.get("/dashboard/api/requests?status=Complete").json()["requests"][0][
            "request_id"] == rid
        assert web.get("/dashboard/api/requests?status=Running").json()["requests"] == []
        assert web.get("/dashboard/api/requests?status=nope").status_code == 400
        missing = web.get("/requests/no-such-request")
        assert missing.status_code == 404 and "404" in missing.text
        assert missing.headers["X-Correlation-ID"] in missing.text
        assert web.get("/static/dashboard.js").status_code == 200
        assert web.get("/login").status_code == 303  # auth off: nothing to log in to


@pytest.mark.parametrize("auth", [False, True], ids=["parquet-open", "root-file-auth"])
def test_the_snippet_loads_the_result(request: pytest.FixtureRequest, auth: bool,
                                      data_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    import uproot

    stack: Stack = request.getfixturevalue("auth_stack" if auth else "open_stack")
    user = "alice" if auth else None
    rid = submit(stack, [str(data_dir / "nano.root")], user=user,
                 fmt="root-file" if auth else "parquet")
    wait_final(stack, rid, user)
    snippet = httpx.get(f"{stack.url}/dashboard/api/requests/{rid}", timeout=30,
                        headers=stack.headers(user) if user else {}).json()["snippet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if auth:
        env["DELIVERY_TOKEN"] = stack.tokens["alice"]  # what the snippet's comment says
    # our own generated text, run as a separate program (never eval'd in this process)
    done = subprocess.run([sys.executable, "-c", snippet + "\nprint(len(events))"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    met = uproot.open(data_dir / "nano.root")["Events"]["MET_pt"].array()
    assert int(done.stdout.split()[-1]) == int(np.sum(met > 15))


def test_heartbeats_need_the_service_token_and_show_up(tmp_path: Path) -> None:
    from api.app import create_app
    from api.serve import build_services
    from delivery.config import Settings

    settings = Settings.from_env({"DELIVERY_STATE_DIR": str(tmp_path),
                                  "DELIVERY_SERVICE_TOKEN": "s" * 24})
    services = build_services(settings)
    web = create_app(services).test_client()
    beat = {"worker": "host:1", "kind": "worker", "pid": 1, "request_id": "r", "file_id": 3,
            "file": "/data/x.root", "files_done": 4, "busy_seconds": 2.0, "events_in": 1000,
            "bytes": 10, "last_error": None, "junk": "x" * 10}
    assert web.post("/internal/heartbeat", json=beat).status_code == 401
    token = {"Authorization": "Bearer " + "s" * 24}
    assert web.post("/internal/heartbeat", json={"pid": 3}, headers=token).status_code == 400
    assert web.post("/internal/heartbeat", json=beat, headers=token).status_code == 200
    view = web.get("/dashboard/api/workers").get_json()
    (worker,) = view["workers"]
    assert (worker["worker"], worker["file_id"], worker["live"]) == ("host:1", 3, True)
    assert worker["events_per_second"] == 500.0 and "junk" not in worker
    assert view["queue_depth"] == 0 and view["dead_letters"] == 0
    assert "host:1" in web.get("/workers").get_data(as_text=True)
    services.broker.close()


def login(stack: Stack, user: str) -> httpx.Client:
    web = httpx.Client(base_url=stack.url, timeout=30)
    answer = web.post("/login", data={"token": stack.tokens[user], "next": "/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookies = answer.headers.get_list("set-cookie")
    access = next(c for c in cookies if c.startswith(ACCESS_COOKIE + "="))
    assert "HttpOnly" in access and "SameSite=Strict" in access and "Path=/" in access
    refresh = next(c for c in cookies if c.startswith(REFRESH_COOKIE + "="))
    assert "HttpOnly" in refresh and "Path=/login" in refresh
    return web


def test_login_isolation_and_csrf(auth_stack: Stack, data_dir: Path) -> None:
    s = auth_stack
    mine = submit(s, [str(data_dir / "nano.root")], user="alice", title="alice's")
    theirs = submit(s, [str(data_dir / "nano.root")], user="bob", title="bob's")
    with httpx.Client(base_url=s.url, timeout=30) as anonymous:
        first = anonymous.get(f"/requests/{mine}")
        assert first.status_code == 303
        assert first.headers["location"] == f"/login?next=/requests/{mine}"
        assert anonymous.get("/dashboard/api/requests").status_code == 401
        bad = anonymous.post("/login", data={"token": "dlv_000000000000_" + "x" * 30})
        assert bad.status_code == 401 and "Unknown or revoked" in bad.text
        foreign = anonymous.post("/login", data={"token": s.tokens["alice"]},
                                 headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        away = anonymous.post("/login", data={"token": s.tokens["alice"],
                                              "next": "//evil.example/x"})
        assert away.headers["location"] == "/"  # never an open redirect
    alice = login(s, "alice")
    home = alice.get("/").text
    assert mine in home and theirs not in home
    assert alice.get(f"/requests/{mine}").status_code == 200
    other = alice.get(f"/requests/{theirs}")
    assert other.status_code == 404 and "bob" not in other.text
    assert alice.get(f"/dashboard/api/requests/{theirs}").status_code == 404
    listed = {r["request_id"] for r in alice.get("/dashboard/api/requests").json()["requests"]}
    assert mine in listed and theirs not in listed
    # the cookie alone cannot change anything: a cross-site form could send that much
    assert alice.post(f"/servicex/transformation/{mine}/cancel").status_code == 403
    assert alice.delete(f"/servicex/transformation/{mine}").status_code == 403
    wait_final(s, mine, "alice")
    answer = alice.delete(f"/servicex/transformation/{mine}", headers={CSRF_HEADER: "1"})
    assert answer.status_code == 200
    assert alice.get(f"/requests/{mine}").status_code == 404
    # an expired access cookie is renewed through /login from the refresh cookie
    alice.cookies.delete(ACCESS_COOKIE)
    renewed = alice.get("/login?next=/workers")
    assert renewed.status_code == 303 and renewed.headers["location"] == "/workers"
    assert alice.get("/workers").status_code == 200
    out = alice.get("/login?logout=1")
    assert out.status_code == 200 and alice.get("/").status_code == 303
    admin = login(s, "admin")
    assert theirs in admin.get("/").text  # admins see every request


def test_workers_page_hides_other_users_files(auth_stack: Stack, data_dir: Path) -> None:
    s = auth_stack
    theirs = submit(s, [str(data_dir / "nano.root")], user="bob")
    s.services.ops.workers.beat({"worker": "w-1", "request_id": theirs, "file_id": 0,
                                 "file": "/secret/bob.root", "last_error": "bob's file broke",
                                 "last_error_request": theirs})
    alice = login(s, "alice")
    worker = next(w for w in alice.get("/dashboard/api/workers").json()["workers"]
                  if w["worker"] == "w-1")
    assert worker["request_id"] is None and "bob" not in json.dumps(worker)
    assert "/secret/bob.root" not in alice.get("/workers").text
    admin = login(s, "admin")
    worker = next(w for w in admin.get("/dashboard/api/workers").json()["workers"]
                  if w["worker"] == "w-1")
    assert worker["file"] == "/secret/bob.root"

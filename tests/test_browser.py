"""The dashboard in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

Never downloads a browser: Playwright launches ``/usr/bin/chromium`` (or
``$DELIVERY_CHROMIUM``). Without Chromium or Playwright the tests skip with the
reason, and fail under ``CI=true``. Screenshots go to
``$DELIVERY_TEST_ARTIFACTS`` (default ``test-artifacts/``, gitignored);
``DELIVERY_UPDATE_DOCS=1`` also rewrites ``docs/dashboard.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import skip_or_fail
from stack import REPO, Stack, embedded_stack

from transformers.generate import generate

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("DELIVERY_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("DELIVERY_TEST_ARTIFACTS") or REPO / "test-artifacts") / "browser"
SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_pt", "Muon_pt"],
                         "cut": "MET_pt > 10"}])
LONG_FILES = 120  # enough to watch progress and cancel, whatever the machine's load
TIMEOUT_MS = 30_000


def submit(stack: Stack, title: str, files: list[str], user: str = "alice") -> str:
    body = {"title": title, "file-list": files, "result-format": "parquet",
            "selection": SELECTION, "reuse": False}
    req = urllib.request.Request(stack.url + "/servicex/transformation",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **stack.headers(user)})
    with urllib.request.urlopen(req, timeout=60) as response:
        return str(json.loads(response.read())["request_id"])


def status(stack: Stack, request_id: str, user: str = "alice") -> dict[str, Any]:
    req = urllib.request.Request(f"{stack.url}/servicex/transformation/{request_id}",
                                 headers=stack.headers(user))
    with urllib.request.urlopen(req, timeout=60) as response:
        found: dict[str, Any] = json.loads(response.read())
        return found


def wait_final(stack: Stack, request_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = status(stack, request_id)
        if found["status"] in ("Complete", "Fatal", "Canceled", "Bad Dataset"):
            return found
        time.sleep(0.3)
    raise AssertionError(f"{request_id} not final after {timeout} s")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("browser-inputs")
    good = root / "nano.root"
    generate(good, 20_000, seed=3, basket_entries=5000)
    corrupt = root / "corrupt.root"
    corrupt.write_bytes(b"this is no ROOT file " * 200)
    many = []
    for i in range(LONG_FILES):  # distinct paths, one inode: a long request, cheap to make
        link = root / f"nano_{i:03d}.root"
        os.link(good, link)
        many.append(str(link))
    many[2] = str(corrupt)  # a failure in the long request too, for the docs picture
    return {"root": root, "good": str(good), "corrupt": str(corrupt), "many": many}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright; never "
                     "'playwright install': we use the system Chromium)")
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        skip_or_fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=["--no-sandbox", "--disable-gpu"])
        yield found
        found.close()


@pytest.fixture(scope="module")
def stack(inputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("browser-stack"), [inputs["root"]],
                        workers=2, auth=True) as found:
        yield found


def shot(page: Any, name: str, full: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def new_page(browser: Any, stack: Stack, user: str | None = "alice") -> Any:
    """A page in a fresh browser (own cookies), logged in through the /login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.js_errors = errors
    if user is not None:
        page.goto(stack.url + "/")  # not logged in: sent to the form
        assert "/login?next=" in page.url
        page.fill("#token", stack.tokens[user])
        page.click("button[type=submit]")
        page.wait_for_url(stack.url + "/")
        assert user in page.inner_text("header .who")
    return page


def test_failed_file_message_and_requests_page(stack: Stack, inputs: dict[str, Any],
                                               browser: Any) -> None:
    rid = submit(stack, "one good, one corrupt", [inputs["good"], inputs["corrupt"]])
    page = new_page(browser, stack)
    page.goto(f"{stack.url}/requests/{rid}")
    # the page updates itself: no reload from here on
    page.wait_for_function(
        "document.getElementById('progress-text').textContent.startsWith('1 of 2 files done, 1 failed')")
    assert page.inner_text("#r-status") == "Complete"
    failure = page.inner_text("#failure-list")
    assert "corrupt.root" in failure and "not a ROOT file" in failure
    assert page.locator("#files tbody tr[data-status=failure] .error-text").inner_text() \
        .strip().endswith("not a ROOT file")
    assert page.locator("#files tbody tr[data-status=success]").count() == 1
    assert '"MET_pt > 10"' in page.inner_text("#selection")
    assert f'request_id = "{rid}"' in page.inner_text("#snippet")
    assert "DELIVERY_TOKEN" in page.inner_text("#snippet")  # auth on: where the token goes
    assert page.locator("#plot path.line").count() == 1
    assert page.is_hidden("#cancel")  # final: nothing to cancel
    shot(page, "request-failed-file")

    page.goto(stack.url + "/")
    row = page.locator(f"#requests tbody tr[data-id='{rid}']")
    assert "Complete" in row.inner_text() and "1 / 2" in row.inner_text()
    page.select_option("#status", "Running")  # the filter redraws from the JSON
    page.wait_for_function(f"!document.querySelector(\"#requests tr[data-id='{rid}']\")")
    assert page.url.endswith("/?status=Running")
    page.select_option("#status", "")
    page.wait_for_selector(f"#requests tbody tr[data-id='{rid}']")
    shot(page, "requests")
    assert not page.js_errors


def test_progress_live_workers_and_cancel(stack: Stack, inputs: dict[str, Any],
                                          browser: Any) -> None:
    rid = submit(stack, "long request", inputs["many"])
    page = new_page(browser, stack)
    page.goto(f"{stack.url}/requests/{rid}")
    first = page.inner_text("#progress-text")
    # live: the counts move while we watch, without a reload
    page.wait_for_function(
        "t => document.getElementById('progress-text').textContent !== t", arg=first)
    page.wait_for_function(
        "parseInt(document.getElementById('progress-text').textContent) >= 6")
    assert page.inner_text("#r-status") == "Running"
    page.wait_for_selector("#failures:not([hidden])")
    if os.environ.get("DELIVERY_UPDATE_DOCS") == "1":  # later in the run: a fuller plot
        page.wait_for_function(
            "parseInt(document.getElementById('progress-text').textContent) >= 30")
        docs = REPO / "docs"
        docs.mkdir(exist_ok=True)
        page.screenshot(path=str(docs / "dashboard.png"))
    shot(page, "request-running", full=False)

    workers = new_page(browser, stack)
    workers.goto(stack.url + "/workers")
    workers.wait_for_function("document.getElementById('w-live').textContent === '2'")
    assert workers.locator("#workers tbody tr[data-worker]").count() == 2
    workers.wait_for_selector("#workers .badge.w-busy")  # a worker on one of our files
    assert rid[:8] in workers.inner_text("#workers")
    shot(workers, "workers")

    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#cancel")
    page.wait_for_function("document.getElementById('r-status').textContent === 'Canceled'")
    assert dialogs and "Cancel request" in dialogs[0]
    assert page.is_hidden("#cancel")
    assert status(stack, rid)["status"] == "Canceled"
    done = wait_final(stack, rid)
    assert done["files-completed"] + done["files-failed"] < LONG_FILES  # it stopped early
    shot(page, "request-canceled", full=False)
    assert not page.js_errors and not workers.js_errors


def test_delete_asks_first(stack: Stack, inputs: dict[str, Any], browser: Any) -> None:
    rid = submit(stack, "to delete", [inputs["good"]])
    wait_final(stack, rid)
    page = new_page(browser, stack)
    page.goto(f"{stack.url}/requests/{rid}")
    page.once("dialog", lambda d: d.dismiss())  # "no": nothing happens
    page.click("#delete")
    assert status(stack, rid)["status"] == "Complete"
    page.once("dialog", lambda d: d.accept())
    page.click("#delete")
    page.wait_for_url(re.compile(r"/$"))
    assert page.locator(f"#requests tr[data-id='{rid}']").count() == 0
    page.goto(f"{stack.url}/requests/{rid}")
    assert "404" in page.inner_text("h1")


def test_another_user_cannot_open_it(stack: Stack, inputs: dict[str, Any],
                                     browser: Any) -> None:
    rid = submit(stack, "alice's own", [inputs["good"]])
    wait_final(stack, rid)
    bob = new_page(browser, stack, "bob")
    assert bob.locator(f"#requests tr[data-id='{rid}']").count() == 0
    bob.goto(f"{stack.url}/requests/{rid}")
    assert "404" in bob.inner_text("h1")
    assert "alice" not in bob.content()
    shot(bob, "other-user-404")
    anonymous = new_page(browser, stack, None)
    anonymous.goto(f"{stack.url}/requests/{rid}")
    assert anonymous.url.startswith(f"{stack.url}/login?next=")
    assert anonymous.is_visible("#token")
    alice = new_page(browser, stack, "alice")
    assert alice.locator(f"#requests tr[data-id='{rid}']").count() == 1


def teardown_module() -> None:
    if ARTIFACTS.exists() and not any(ARTIFACTS.iterdir()):
        shutil.rmtree(ARTIFACTS, ignore_errors=True)

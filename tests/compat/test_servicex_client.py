"""The unmodified PyPI ``servicex`` 3.x client against the real stack.

RabbitMQ + moto S3 + PostgreSQL + ``delivery worker`` subprocesses (``tests/stack.py``):
``servicex.deliver`` submits, polls ``/results`` and downloads from S3 itself (or,
with ``Delivery: URLs``, hands back presigned URLs), so this is the whole ServiceX
contract of ``shared/docs/servicex-protocol.md`` end to end; a second, auth-on
stack checks the ``token`` of ``servicex.yaml`` and ``/token/refresh``. Every
client call runs in a daemon thread with a deadline: a server that
breaks the completion rule makes the client poll forever, and that must be a
failure here, not a hung suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import awkward as ak
import pytest
import uproot
from servers import in_ci
from stack import Stack, real_stack

try:
    import servicex
    from servicex import ProgressBarFormat, dataset, query
except ImportError as err:  # pragma: no cover - depends on the environment
    if in_ci():
        raise
    pytest.skip(f"servicex client not installed ({err}); pip install 'servicex==3.3.1'",
                allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

T = TypeVar("T")
DEADLINE = 180.0  # seconds for one client call; the client polls every 5 s
BRANCHES = ["NMuon", "Muon_Px", "MET_px"]
CUT = "NMuon >= 1 and MET_px > -20"
INPUTS = {"hzz.root": "uproot-HZZ.root", "hzz-zstd.root": "uproot-HZZ-zstd.root"}


def bounded(fn: Callable[[], T], timeout: float = DEADLINE) -> tuple[T, float]:
    """``fn()`` in a daemon thread; fail (instead of hanging) if it outlives ``timeout``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            box["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=run, name="servicex-client", daemon=True)
    thread.start()
    thread.join(timeout)
    elapsed = time.monotonic() - start
    assert not thread.is_alive(), f"the servicex client still runs after {timeout:.0f} s"
    if "error" in box:
        raise box["error"]
    return box["value"], elapsed


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Copies of two real files in a directory the stack may read (its only allowed root)."""
    root = tmp_path_factory.mktemp("sx-inputs")
    for name, source in INPUTS.items():
        shutil.copy(shared_data / source, root / name)
    (root / "corrupt.root").write_bytes(b"garbage, not ROOT " * 300)
    return root


@pytest.fixture(scope="module")
def expected(inputs: Path) -> ak.Array:
    """The answer, read directly with uproot and cut in awkward (both inputs hold the same
    events, one ZLIB- and one ZSTD-compressed, so each output must equal this)."""
    answers = []
    for name in INPUTS:
        direct = uproot.open(inputs / name)["events"].arrays(BRANCHES)
        answers.append(direct[(direct.NMuon >= 1) & (direct.MET_px > -20)])
    assert ak.array_equal(answers[0], answers[1])
    assert 0 < len(answers[0]) < 2421  # the cut removes events and keeps some
    return answers[0]


@pytest.fixture(scope="module")
def stack(inputs: Path, tmp_path_factory: pytest.TempPathFactory,
          s3_endpoint: str) -> Iterator[Stack]:
    with real_stack(tmp_path_factory.mktemp("sx-stack"), [inputs], s3_endpoint) as s:
        yield s


@pytest.fixture(scope="module")
def config(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``servicex.yaml`` naming the stack, without a token (auth is off)."""
    home = tmp_path_factory.mktemp("sx-client")
    path = home / "servicex.yaml"
    path.write_text(f"api_endpoints:\n  - endpoint: {stack.url}\n    name: local\n"
                    f"cache_path: {home / 'cache'}\n")
    return path


def client_config(stack: Stack, home: Path, token: str | None = None) -> Path:
    """A ``servicex.yaml`` of its own (its own cache_path) in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "servicex.yaml"
    line = f"    token: {token}\n" if token else ""
    path.write_text(f"api_endpoints:\n  - endpoint: {stack.url}\n    name: local\n{line}"
                    f"cache_path: {home / 'cache'}\n")
    return path


def uproot_raw(**extra: Any) -> Any:
    return query.UprootRaw([{"treename": "events", "filter_name": BRANCHES, "cut": CUT,
                             **extra}])


def deliver(config: Path, samples: list[dict[str, Any]], fmt: str,
            timeout: float = DEADLINE,
            delivery: str = "LocalCache") -> tuple[dict[str, Any], float]:
    spec = {"General": {"OutputFormat": fmt, "Delivery": delivery}, "Sample": samples}
    return bounded(lambda: servicex.deliver(spec, config_path=str(config),
                                            ignore_local_cache=True,
                                            progress_bar=ProgressBarFormat.none), timeout)


def api(stack: Stack, path: str, body: dict[str, Any] | None = None) -> Any:
    """Our API directly (GET, or POST with a JSON body), to check the server's side."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stack.url + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def read_parquet(path: str) -> ak.Array:
    return ak.from_parquet(path)


def read_root(path: str) -> ak.Array:
    with uproot.open(path) as f:
        trees = [k.split(";")[0] for k, c in f.classnames().items() if c == "TTree"]
        assert trees == ["events"], f"output trees {trees}: the input tree's name is kept"
        return f["events"].arrays(BRANCHES)


def assert_same(out: ak.Array, want: ak.Array) -> None:
    assert sorted(out.fields) == sorted(BRANCHES)
    assert len(out) == len(want)
    for name in BRANCHES:
        assert ak.array_equal(out[name], want[name]), name


@pytest.mark.parametrize("fmt, suffix, reader", [
    ("parquet", ".parquet", read_parquet),
    ("root-ttree", ".root", read_root),
])
def test_deliver_downloads_exact_results(config: Path, inputs: Path, expected: ak.Array,
                                         fmt: str, suffix: str,
                                         reader: Callable[[str], ak.Array]) -> None:
    files = [str(inputs / name) for name in INPUTS]
    result, elapsed = deliver(config, [{"Name": f"hzz-{fmt}",
                                        "Dataset": dataset.FileList(files),
                                        "Query": uproot_raw()}], fmt)
    paths = list(result[f"hzz-{fmt}"])  # an invalid GuardList raises the client's error here
    assert len(paths) == 2, paths
    for path in paths:
        assert path.endswith(suffix) and Path(path).is_file()
        assert Path(path).parent.parent == config.parent / "cache"
        assert_same(reader(path), expected)
    assert elapsed < 60, f"{fmt}: the client took {elapsed:.1f} s"


@pytest.mark.parametrize("fmt, reader", [("parquet", read_parquet), ("root-ttree", read_root)])
def test_delivery_urls_are_fetchable_and_hold_the_same_data(
        inputs: Path, stack: Stack, expected: ak.Array, tmp_path: Path,
        fmt: str, reader: Callable[[str], ak.Array]) -> None:
    """``Delivery: URLs``: the client downloads nothing and returns presigned object-store
    URLs (signed with the read-only pair our status hands out); each is fetchable by
    plain HTTP, without credentials, and holds exactly the data."""
    config = client_config(stack, tmp_path / "client")
    files = [str(inputs / name) for name in INPUTS]
    result, _elapsed = deliver(config, [{"Name": f"urls-{fmt}",
                                         "Dataset": dataset.FileList(files),
                                         "Query": uproot_raw()}], fmt, delivery="URLs")
    urls = list(result[f"urls-{fmt}"])
    assert len(urls) == 2, urls
    cache = config.parent / "cache"
    assert not any(p.is_file() and p.suffix in (".parquet", ".root")
                   for p in cache.rglob("*"))  # nothing downloaded
    endpoint = stack.env["DELIVERY_S3_ENDPOINT"]
    for n, url in enumerate(urls):
        assert url.startswith(f"http://{endpoint}/"), url  # the store, not our API
        query_string = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        # signed (SigV2 or SigV4, as the client's boto chooses) with the read-only key
        key = (query_string.get("AWSAccessKeyId")
               or [query_string["X-Amz-Credential"][0].split("/")[0]])[0]
        assert key == "reader", url
        with urllib.request.urlopen(url, timeout=30) as response:  # no headers, no keys
            data = response.read()
        local = tmp_path / f"{n}.{'parquet' if fmt == 'parquet' else 'root'}"
        local.write_bytes(data)
        assert_same(reader(str(local)), expected)


def test_two_samples_in_one_call_and_a_repeat(config: Path, inputs: Path, stack: Stack,
                                              expected: ak.Array) -> None:
    """Samples run concurrently; asking again (client cache ignored) still delivers,
    also when the server answers from its own result cache (copied objects)."""
    samples = [
        {"Name": "zlib", "Dataset": dataset.FileList([str(inputs / "hzz.root")]),
         "Query": uproot_raw()},
        {"Name": "zstd-met", "Dataset": dataset.FileList([str(inputs / "hzz-zstd.root")]),
         "Query": query.UprootRaw([{"treename": "events", "filter_name": ["MET_px"]}])},
    ]
    request_ids: list[str] = []
    for _ in range(2):
        result, _elapsed = deliver(config, samples, "parquet")
        (zlib,) = result["zlib"]
        assert_same(read_parquet(zlib), expected)
        (met,) = result["zstd-met"]
        direct = uproot.open(inputs / "hzz-zstd.root")["events"].arrays(["MET_px"])
        assert ak.array_equal(read_parquet(met), direct)
        request_ids.append(Path(zlib).parent.name)  # downloads go to <cache>/<request_id>/
    first, again = request_ids
    assert first != again
    assert api(stack, f"/servicex/transformation/{again}")["reused-from"] == first


def test_bad_dataset_ends_with_the_clients_error(config: Path, stack: Stack) -> None:
    """An unresolvable DID (no rucio finder here) ends Bad Dataset; the client reports
    its dataset error for that sample instead of polling forever."""
    result, elapsed = deliver(config, [{"Name": "nowhere",
                                        "Dataset": dataset.Rucio("scope:name"),
                                        "Query": uproot_raw()}], "parquet", timeout=60)
    guard = result["nowhere"]
    assert not guard.valid()
    with pytest.raises(Exception, match="dataset problem") as info:
        list(guard)
    cause = info.value._exc  # the client's ReturnValueException keeps the original
    assert type(cause).__name__ == "ServiceXException"
    # The client then reads GET /servicex/datasets/<did_id>: lookup_status holds its
    # code for the reason ("bad_name": no finder for this scheme).
    assert str(cause) == \
        'Request "nowhere" failed due to a dataset problem: Bad dataset specification'
    assert elapsed < 30, f"Bad Dataset took {elapsed:.1f} s to reach the client"
    # our reason is on the server side (the client shows neither failure-info nor it)
    (status,) = [r for r in api(stack, "/servicex/transformation")["requests"]
                 if r["title"] == "nowhere"]
    assert status["status"] == "Bad Dataset" and status["did"] == "rucio://scope:name"
    assert "no finder configured for rucio" in status["failure-info"]


def test_a_failed_file_ends_the_client_with_the_good_outputs(config: Path, inputs: Path,
                                                             stack: Stack,
                                                             expected: ak.Array) -> None:
    """One good and one corrupt input: the request completes with one failure. The
    client stops polling (files-completed counts only successes) and, even with
    fail_if_incomplete (its default), servicex 3.3.1 only logs "completed with
    failures" (raised in a done-callback) and returns the outputs it has."""
    files = [str(inputs / "hzz.root"), str(inputs / "corrupt.root")]
    result, _elapsed = deliver(config, [{"Name": "half", "Dataset": dataset.FileList(files),
                                         "Query": uproot_raw()}], "parquet")
    (path,) = result["half"]
    assert_same(read_parquet(path), expected)
    request_id = Path(path).parent.name
    status = api(stack, f"/servicex/transformation/{request_id}")
    assert (status["status"], status["files"], status["files-completed"],
            status["files-failed"]) == ("Complete", 2, 1, 1)


def test_refused_file_is_the_clients_invalid_request(config: Path, tmp_path: Path) -> None:
    """A file outside the allowed roots is a 400 at submission: the client's ValueError
    carries our message, without any polling."""
    outside = tmp_path / "outside.root"
    outside.write_bytes(b"x")
    result, elapsed = deliver(config, [{"Name": "outside",
                                        "Dataset": dataset.FileList([str(outside)]),
                                        "Query": uproot_raw()}], "parquet", timeout=60)
    with pytest.raises(Exception) as info:
        list(result["outside"])
    cause = info.value._exc
    assert isinstance(cause, ValueError)
    assert "Invalid transform request" in str(cause) and "outside the allowed roots" in str(cause)
    assert elapsed < 20


def cli(config: Path, *args: str, ok: bool = True) -> str:
    """``servicex <args> -c <config>``; its output (stdout, plus stderr if ``ok`` is False)."""
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "servicex.app.main", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=120, env=env,
                          cwd=config.parent)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout if ok else done.stdout + done.stderr


def test_cli_lists_transforms_and_files_then_deletes(config: Path, inputs: Path,
                                                     stack: Stack) -> None:
    result, _ = deliver(config, [{"Name": "for-the-cli",
                                  "Dataset": dataset.FileList([str(inputs / "hzz.root")]),
                                  "Query": uproot_raw(expressions=["MET_px"])}], "parquet")
    (local,) = result["for-the-cli"]
    request_id = Path(local).parent.name  # the client downloads into <cache>/<request_id>/

    assert "uproot-raw" in cli(config, "codegen", "list")
    listing = cli(config, "transforms", "list")
    row = next(line for line in listing.splitlines() if request_id in line)
    assert "for-the-cli" in row and "Complete" in row

    # "files" lists the bucket itself (ListObjectsV2 with the minio-* read credentials)
    files = [line.split() for line in cli(config, "transforms", "files", request_id)
             .splitlines() if line.strip()]
    assert [(f[0], f[-1]) for f in files] == [(Path(local).name, "parquet")]

    # servicex 3.3.1's "transforms delete" sends the DELETE, then crashes on its own
    # asyncio.run(None) (ServiceXClient.delete_transform is already synchronous); the
    # server side must be done all the same.
    crashed = cli(config, "transforms", "delete", request_id, ok=False)
    assert "a coroutine was expected, got None" in crashed
    assert request_id not in cli(config, "transforms", "list")
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(stack, f"/servicex/transformation/{request_id}")
    assert gone.value.code == 404
    assert stack.services.objects.list(request_id) == []


def test_cli_lists_datasets(config: Path, inputs: Path, stack: Stack) -> None:
    request_id = api(stack, "/servicex/transformation", {
        "title": "for-the-dataset-list", "codegen": "uproot-raw", "result-format": "parquet",
        "selection": uproot_raw().generate_selection_string(),
        "file-list": [str(inputs / "hzz.root")]})["request_id"]
    did_id = api(stack, f"/servicex/transformation/{request_id}")["did_id"]
    rows = [line.split() for line in cli(config, "datasets", "list").splitlines()]
    assert str(did_id) in [row[0] for row in rows if row]


# -- auth on: ``token`` in servicex.yaml, exchanged at /token/refresh ----------------


@pytest.fixture(scope="module")
def auth_stack(inputs: Path, tmp_path_factory: pytest.TempPathFactory,
               s3_endpoint: str) -> Iterator[Stack]:
    with real_stack(tmp_path_factory.mktemp("sx-auth-stack"), [inputs], s3_endpoint,
                    workers=1, auth=True) as s:
        yield s


def test_with_auth_the_token_in_servicex_yaml_is_refreshed_and_used(
        auth_stack: Stack, inputs: Path, expected: ak.Array, tmp_path: Path) -> None:
    """The client exchanges ``token`` at POST /token/refresh for an access JWT (it reads
    its ``exp`` itself), sends it on every call, and gets exact results; the request is
    alice's: bob cannot see it."""
    config = client_config(auth_stack, tmp_path / "alice", auth_stack.tokens["alice"])
    result, _elapsed = deliver(config, [{"Name": "with-auth",
                                         "Dataset": dataset.FileList([str(inputs / "hzz.root")]),
                                         "Query": uproot_raw()}], "parquet")
    (path,) = result["with-auth"]
    assert_same(read_parquet(path), expected)
    request_id = Path(path).parent.name

    def status(user: str) -> int:
        req = urllib.request.Request(f"{auth_stack.url}/servicex/transformation/{request_id}",
                                     headers=auth_stack.headers(user))
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code

    assert (status("alice"), status("bob"), status("admin")) == (200, 404, 200)


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_with_auth_a_missing_or_bad_token_is_the_clients_error_not_a_hang(
        auth_stack: Stack, inputs: Path, tmp_path: Path, token: str | None) -> None:
    config = client_config(auth_stack, tmp_path, token)
    start = time.monotonic()
    with pytest.raises(Exception) as info:  # raised by deliver() or by reading its result
        result, _ = deliver(config, [{"Name": "no-auth",
                                      "Dataset": dataset.FileList([str(inputs / "hzz.root")]),
                                      "Query": uproot_raw()}], "parquet", timeout=120)
        list(result["no-auth"])
    elapsed = time.monotonic() - start
    cause = getattr(info.value, "_exc", info.value)
    assert type(cause).__name__ == "AuthorizationError", repr(cause)
    assert ("Not authorized" in str(cause)) if token is None else ("rejected [401" in str(cause))
    assert elapsed < 90

"""The client library against real running services: the embedded default and the real stack."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import pytest
import uproot
from stack import Stack, stack_for

from delivery import Client, DeliveryFailed, Query, SelectionError, TransientError, deliver
from delivery.client import DeliveryStalled, DeliveryStream, TruncatedDownload, verify_size
from transformers.generate import generate

pytestmark = pytest.mark.integration

COLUMNS = ["MET_pt", "Muon_pt"]
CUT = "count(Muon_pt > 20) >= 1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client-inputs")
    (root / "corrupt.root").write_bytes(b"garbage, not ROOT " * 300)
    for i in range(3):
        generate(root / f"nano{i}.root", 2000, seed=10 + i, basket_entries=1000)
    return root


@pytest.fixture(scope="module", params=["embedded", "real"])
def stack(request: pytest.FixtureRequest, data_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_for(request, tmp_path_factory.mktemp(f"client-{request.param}"),
                   [data_dir]) as s:
        yield s


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, timeout=30) as c:
        yield c


def files(data_dir: Path, *names: str) -> list[str]:
    return [str(data_dir / n) for n in names]


def expected(paths: list[str]) -> ak.Array:
    parts = []
    for p in paths:
        a = uproot.open(p)["Events"].arrays(COLUMNS)
        parts.append(a[ak.sum(a.Muon_pt > 20, axis=1) >= 1])
    return ak.concatenate(parts)


def test_arrays_equal_uproot_with_the_cut(client: Client, data_dir: Path) -> None:
    inputs = files(data_dir, "nano0.root", "nano1.root")
    query = Query("Events").columns(*COLUMNS).where(CUT)
    spec = {"Sample": [
        {"Name": "plain", "Dataset": inputs, "Query": query},
        {"Name": "derived", "Dataset": inputs,
         "Query": Query("Events").columns("MET_pt").define("n_mu", "count(Muon_pt > 20)")
         .where("n_mu >= 1")},
    ]}
    got = deliver(spec, client=client)
    assert sorted(got) == ["derived", "plain"] and got.failures == []
    want = expected(inputs)
    assert ak.array_equal(got["plain"], want)
    assert ak.to_list(got["derived"]["MET_pt"]) == ak.to_list(want["MET_pt"])
    assert ak.to_list(got["derived"]["n_mu"]) == ak.to_list(ak.sum(want.Muon_pt > 20, axis=1))


def test_paths_mode_sizes_equal_total_bytes(client: Client, data_dir: Path,
                                            tmp_path: Path) -> None:
    inputs = files(data_dir, "nano0.root", "nano1.root", "nano2.root")
    spec = {"Sample": [{"Name": "s", "Dataset": inputs,
                        "Query": json.dumps([{"treename": "Events", "filter_name": "MET_*"}])}]}
    got = deliver(spec, client=client, output="paths", dest_dir=tmp_path)
    paths = got["s"]
    assert len(paths) == 3 and all(p.parent == tmp_path / "s" for p in paths)
    results = client.http.get(f"/servicex/transformation/{got.request_ids['s']}/results")
    sizes = {r["s3-object-name"]: r["total-bytes"] for r in results["results"]}
    assert {p.name: p.stat().st_size for p in paths} == sizes
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(sizes)  # no .part


def test_iterator_yields_each_file(client: Client, data_dir: Path) -> None:
    inputs = files(data_dir, "nano0.root", "nano1.root", "nano2.root")
    spec = {"Sample": [{"Name": "it", "Dataset": inputs,
                        "Query": Query("Events").columns(*COLUMNS).where(CUT)}]}
    stream = deliver(spec, client=client, output="iterator", download_workers=2)
    assert isinstance(stream, DeliveryStream)
    chunks = list(stream)
    assert [name for name, _ in chunks] == ["it"] * 3 and stream.failures == []
    assert sum(len(a) for _, a in chunks) == len(expected(inputs))


def test_a_corrupt_input_fails_loudly_or_returns_the_good_part(client: Client,
                                                                data_dir: Path) -> None:
    spec = {"Sample": [{"Name": "mixed", "Dataset": files(data_dir, "corrupt.root", "nano0.root"),
                        "Query": Query("Events").columns(*COLUMNS).where(CUT)}]}
    with pytest.raises(DeliveryFailed, match=r"corrupt\.root: .*not a ROOT file") as info:
        deliver(spec, client=client)
    (failure,) = info.value.failures
    assert failure.sample == "mixed" and failure.path and failure.path.endswith("corrupt.root")
    partial = deliver(spec, client=client, fail_if_incomplete=False)
    assert ak.array_equal(partial["mixed"], expected(files(data_dir, "nano0.root")))
    assert [f.path for f in partial.failures] == [failure.path]


def test_download_with_a_wrong_size_is_retried_then_refused(client: Client, data_dir: Path,
                                                           tmp_path: Path) -> None:
    spec = {"Sample": [{"Name": "one", "Dataset": files(data_dir, "nano2.root"),
                        "Query": Query("Events").columns("MET_pt")}]}
    rid = client.submit(spec["Sample"][0])
    (item,) = list(client.follow(rid, deadline=60))
    lying = {**item, "total-bytes": item["total-bytes"] + 7}
    with pytest.raises(TruncatedDownload, match="after 2 attempts"):
        client.download(rid, lying, tmp_path, attempts=2)
    assert list(tmp_path.iterdir()) == []  # nothing partial is exposed
    good = client.download(rid, item, tmp_path)
    assert good.stat().st_size == item["total-bytes"]
    # The server's checksum is the stored bytes' own; a different one is refused.
    import hashlib

    assert item["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    other = tmp_path / "other"
    forged = {**item, "sha256": "0" * 64}
    with pytest.raises(TruncatedDownload, match="checksum"):
        client.download(rid, forged, other, attempts=1)
    assert list(other.iterdir()) == []


def test_bad_selections_are_refused_before_any_http_call() -> None:
    dead = Client("http://127.0.0.1:9", retries=0)  # would be a TransientError if contacted
    bad = [{"Name": "x", "Dataset": ["/a.root"], "Query": q} for q in (
        Query("Events").where("__import__('os')"),
        Query("Events").columns("Muon_*").define("n", "count(Muon_pt > 1)"),
        '[{"treename": "Events", "bogus": 1}]',
        [],
    )]
    for sample in bad:
        with pytest.raises(SelectionError):
            deliver({"Sample": [sample]}, client=dead)
        with pytest.raises(SelectionError):
            dead.submit(sample)


def test_dead_server_is_a_quick_transient_error() -> None:
    start = time.monotonic()
    with pytest.raises(TransientError, match="cannot connect"):
        Client("http://127.0.0.1:9", retries=2, backoff=0.05).status("x")
    assert time.monotonic() - start < 3


def test_verify_size_on_a_real_short_file(tmp_path: Path) -> None:
    path = tmp_path / "short.parquet"
    path.write_bytes(b"x" * 10)
    verify_size(path, 10)
    with pytest.raises(TruncatedDownload, match="got 10 bytes, expected 11"):
        verify_size(path, 11)


# A real (tiny) HTTP server for behaviour a healthy service never shows.
Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def odd_server() -> Iterator[Callable[[Handler], str]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handle: Handler) -> str:
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def send_json(h: http.server.BaseHTTPRequestHandler, body: Any) -> None:
    data = json.dumps(body).encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def test_a_truncated_transfer_is_retried(odd_server: Callable[[Handler], str],
                                         tmp_path: Path) -> None:
    payload = bytes(range(256)) * 40
    calls = []

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        calls.append(h.path)
        body = payload[:1000] if len(calls) == 1 else payload  # the first transfer is cut
        h.send_response(200)
        h.send_header("Connection", "close")  # no Content-Length: a short body looks whole
        h.end_headers()
        h.wfile.write(body)
        h.close_connection = True

    client = Client(odd_server(handle), backoff=0.01)
    item = {"file-id": 3, "s3-object-name": "out.parquet", "total-bytes": len(payload)}
    path = client.download("rid", item, tmp_path)
    assert path.read_bytes() == payload and len(calls) == 2
    assert calls[0] == "/api/v1/requests/rid/files/3/download"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def status(state: str, files: int, completed: int) -> dict[str, Any]:
    return {"status": state, "files": files, "files-completed": completed,
            "files-failed": 0, "failure-info": None}


@pytest.mark.parametrize("state, limits, words", [
    ("Complete", {"grace": 0.5}, "counts do not add up"),
    ("Running", {"deadline": 1.0}, "deadline"),
    ("Running", {"stall_timeout": 1.0}, "no progress"),
])
def test_a_server_that_never_adds_up_is_an_error_not_a_hang(
        odd_server: Callable[[Handler], str], state: str, limits: dict[str, float],
        words: str) -> None:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        if "/wait" in h.path and state == "Running":
            time.sleep(0.2)  # a long poll that times out with no news
        news = {"status": status(state, 2, 1), "results": []}
        send_json(h, news if "/wait" in h.path else {"results": []})

    start = time.monotonic()
    with pytest.raises(DeliveryStalled, match=words):
        list(Client(odd_server(handle)).follow("rid", **limits))
    assert time.monotonic() - start < 5


def test_a_presigned_download_is_direct_retried_when_cut_and_never_sees_our_token(
        odd_server: Callable[[Handler], str], tmp_path: Path) -> None:
    """Our API redirects to the object store; the client fetches it with http.client
    (no Authorization: the URL is its own credential), and a cut transfer is retried."""
    import hashlib

    payload = bytes(range(256)) * 8000  # 2 MB: several read blocks
    store_calls: list[tuple[str, str | None]] = []
    api_calls: list[str | None] = []

    def store(h: http.server.BaseHTTPRequestHandler) -> None:
        store_calls.append((h.path, h.headers.get("Authorization")))
        h.send_response(200)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload[:70_000] if len(store_calls) == 1 else payload)
        h.close_connection = True

    store_url = odd_server(store)

    def api(h: http.server.BaseHTTPRequestHandler) -> None:
        api_calls.append(h.headers.get("Authorization"))
        h.send_response(307)
        h.send_header("Location", f"{store_url}/bucket/out.parquet?X-Amz-Signature=abc")
        h.send_header("Content-Length", "0")
        h.end_headers()

    client = Client(odd_server(api), token="opaque-bearer", backoff=0.01)
    item = {"file-id": 4, "s3-object-name": "out.parquet", "total-bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest()}
    path = client.download("rid", item, tmp_path)
    assert path.read_bytes() == payload
    assert api_calls == ["Bearer opaque-bearer"] * 2
    assert store_calls == [("/bucket/out.parquet?X-Amz-Signature=abc", None)] * 2
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_an_encoded_store_answer_goes_through_httpx(odd_server: Callable[[Handler], str],
                                                    tmp_path: Path) -> None:
    import gzip
    import hashlib

    payload = b"columnar " * 5000
    body = gzip.compress(payload)

    def store(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    store_url = odd_server(store)

    def api(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", f"{store_url}/b/k")
        h.send_header("Content-Length", "0")
        h.end_headers()

    item = {"file-id": 1, "s3-object-name": "k.parquet", "total-bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest()}
    path = Client(odd_server(api)).download("rid", item, tmp_path)
    assert path.read_bytes() == payload

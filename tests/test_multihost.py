"""A real multi-host run: an API host and two worker hosts, each its own network namespace.

Hosts (``tests/netns.py``): ``api`` runs ``delivery serve``; ``w1`` and ``w2``
each run one ``delivery worker``. They share nothing but the network: a bridge
whose ``.1`` is this machine, where RabbitMQ and PostgreSQL (which listen on
loopback) are relayed by TCP forwarders and where a ``moto_server`` S3 listens
itself. So the broker, S3, the database and the API are all reached over veth
links, never over loopback. Inputs are local paths: the hosts share this
machine's file system, as worker nodes share a cluster file system.

Which host did which file comes from each worker's own log ("file N of <request>
recorded"), kept in one file per host. A second request loses host ``w1``'s
worker to SIGKILL while it is mid-file (its scratch folder holds the file's
work); the request must still complete with every output exactly once: one
result per file and as many objects in the request's bucket as files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from netns import Network, network, require_netns, tcp_forwarder
from servers import free_port, require_service, wait_for_port
from stack import PG_ADMIN, REPO, _postgres_database, _rabbit_or_skip

from delivery.objects.s3 import S3Store
from transformers.generate import generate

pytestmark = pytest.mark.integration

EVENTS = 100_000  # about 0.4 s per file on an idle core; a worker is mid-file most of the time
FILES = 10
SELECTION = json.dumps([{"treename": "Events", "filter_name": ["MET_*", "Muon_*", "Jet_*"],
                         "cut": "MET_pt > 60"}])
RECORDED = re.compile(r"file (\d+) of ([0-9a-f-]+) recorded: (\w+)")
FINAL = ("Complete", "Fatal", "Canceled", "Bad Dataset")
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"  # as this machine sees it
API_PORT = 8000  # the API host's own port: nothing else lives in its namespace
_PROBE = """import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
    print("reachable")
except OSError:
    print("unreachable")
"""


@dataclass
class Cluster:
    net: Network
    url: str
    env: dict[str, str]
    logs: Path
    s3: S3Store
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def done_by(self, request_id: str) -> dict[str, list[int]]:
        """Per worker host, the files of ``request_id`` its log says it recorded."""
        out: dict[str, list[int]] = {}
        for host in self.workers:
            text = (self.logs / f"{host}.log").read_text(errors="replace")
            out[host] = [int(m[1]) for m in RECORDED.finditer(text) if m[2] == request_id]
        return out


def _call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def _submit(cluster: Cluster, files: list[Path]) -> str:
    body = {"title": "multihost", "selection": SELECTION, "codegen": "uproot-raw",
            "result-destination": "object-store", "result-format": "parquet",
            "file-list": [str(f) for f in files], "reuse": False}
    return str(_call(cluster.url + "/servicex/transformation", "POST", body)["request_id"])


def _status(cluster: Cluster, request_id: str) -> dict[str, Any]:
    found: dict[str, Any] = _call(f"{cluster.url}/servicex/transformation/{request_id}")
    return found


def _wait_final(cluster: Cluster, request_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(cluster, request_id)
        if status["status"] in FINAL:
            return status
        _call(f"{cluster.url}/api/v1/requests/{request_id}/wait?timeout=2")
    raise AssertionError(f"request {request_id} not final after {timeout} s: {status}")


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("multihost-inputs") / "big.root"
    generate(path, EVENTS, codec="ZSTD", seed=11)
    return path


def _inputs(big: Path, tag: str) -> list[Path]:
    """FILES distinct names for one file's bytes (hard links)."""
    paths = [big.parent / f"{tag}-{i}.root" for i in range(FILES)]
    for path in paths:
        os.link(big, path)
    return paths


@contextlib.contextmanager
def _moto(address: str) -> Iterator[int]:
    binary = require_service("moto_server", "moto_server not installed (pip install "
                                            "'moto[server]')")
    port = free_port(address)
    proc = subprocess.Popen([binary, "-H", address, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port(address, port, 30), "moto_server did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_api(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"API died:\n{log.read_text(errors='replace')[-3000:]}"
        with contextlib.suppress(urllib.error.URLError, OSError):
            _call(url + "/servicex")
            return
        time.sleep(0.2)
    raise AssertionError(f"API not answering:\n{log.read_text(errors='replace')[-3000:]}")


def _start(cluster: Cluster, host: str, argv: list[str], **extra: str) -> \
        subprocess.Popen[bytes]:
    with open(cluster.logs / f"{host}.log", "ab") as log:
        return subprocess.Popen(cluster.net.exec(host, argv), env={**cluster.env, **extra},
                                stdout=log, stderr=subprocess.STDOUT)


def _consumers(queue: str) -> int:
    import pika

    with contextlib.suppress(pika.exceptions.ChannelClosedByBroker), \
            pika.BlockingConnection(pika.URLParameters(BROKER)) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.consumer_count)
    return 0  # not declared yet


@pytest.fixture
def cluster(tmp_path: Path, big_file: Path) -> Iterator[Cluster]:
    require_netns()
    _rabbit_or_skip(BROKER)
    queue = f"test.multihost.{uuid.uuid4().hex}"
    with network(["api", "w1", "w2"]) as net, \
            tcp_forwarder(net.gateway, ("127.0.0.1", 5672)) as amqp_port, \
            tcp_forwarder(net.gateway, ("127.0.0.1", 5432)) as pg_port, \
            _moto(net.gateway) as s3_port, _postgres_database() as database:
        host_db = database.replace(PG_ADMIN.split("@")[1].split("/")[0],
                                   f"{net.gateway}:{pg_port}")
        url = f"http://{net.hosts['api']}:{API_PORT}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
        env.update({
            "PYTHONPATH": str(REPO), "DELIVERY_LOG_FORMAT": "text",
            "DELIVERY_STATE_DIR": str(tmp_path / "state"), "DELIVERY_DATABASE_URL": host_db,
            "DELIVERY_BROKER_URL": f"amqp://guest:guest@{net.gateway}:{amqp_port}/%2F",
            "DELIVERY_QUEUE": queue, "DELIVERY_S3_ENDPOINT": f"{net.gateway}:{s3_port}",
            "DELIVERY_S3_ACCESS_KEY": "writer", "DELIVERY_S3_SECRET_KEY": "writer-secret",
            "DELIVERY_ALLOWED_ROOTS": str(big_file.parent),
            "DELIVERY_SERVICE_TOKEN": uuid.uuid4().hex, "DELIVERY_API_URL": url,
        })
        s3 = S3Store(f"{net.gateway}:{s3_port}", "writer", "writer-secret")
        cluster = Cluster(net, url, env, tmp_path, s3)
        # The hosts really are apart: the shared services are not on their loopback.
        probe = subprocess.run(net.exec("w1", [sys.executable, "-c", _PROBE, "5672"]),
                               capture_output=True, text=True, timeout=30, check=False)
        assert probe.stdout.strip() == "unreachable", probe
        python = [sys.executable, "-m", "delivery"]
        api = _start(cluster, "api", [*python, "serve", "--host", net.hosts["api"],
                                      "--port", str(API_PORT), "--workers", "0"])
        try:
            _wait_api(url, api, tmp_path / "api.log")
            for host in ("w1", "w2"):
                scratch = tmp_path / f"scratch-{host}"
                scratch.mkdir()
                cluster.workers[host] = _start(cluster, host, [*python, "worker"],
                                               TMPDIR=str(scratch))
            # Both hosts subscribed before the first request (else one could take it all).
            deadline = time.monotonic() + 60
            while _consumers(queue) < len(cluster.workers):
                assert time.monotonic() < deadline and all(
                    p.poll() is None for p in cluster.workers.values()), \
                    (tmp_path / "w1.log").read_text()[-2000:]
                time.sleep(0.1)
            yield cluster
        finally:
            for proc in [*cluster.workers.values(), api]:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM if proc is not api else signal.SIGINT)
            for proc in [*cluster.workers.values(), api]:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            with contextlib.suppress(Exception):
                from delivery.broker.rabbitmq import RabbitBroker

                RabbitBroker(BROKER, queue).delete_queues()


def _check_exactly_once(cluster: Cluster, request_id: str, files: list[Path]) -> None:
    status = _status(cluster, request_id)
    assert (status["status"], status["files-completed"], status["files-failed"]) == \
        ("Complete", FILES, 0), status
    results = _call(f"{cluster.url}/servicex/transformation/{request_id}/results")["results"]
    assert sorted(r["file-path"] for r in results) == sorted(map(str, files))
    assert all(r["transform_status"] == "success" for r in results)
    objects = cluster.s3.list(request_id)
    assert len(objects) == FILES, objects
    assert sorted(name for name, _ in objects) == sorted(r["s3-object-name"] for r in results)


@contextlib.contextmanager
def _explained(cluster: Cluster) -> Iterator[None]:
    """On failure, add the tail of every host's log to the message."""
    try:
        yield
    except AssertionError as err:
        tails = "\n".join(f"--- {host}.log (pika's lines left out)\n" + "\n".join(
            [line for line in (cluster.logs / f"{host}.log").read_text(errors="replace")
             .splitlines() if "pika" not in line][-25:]) for host in ("api", *cluster.workers))
        raise AssertionError(f"{err}\n{tails}") from None


def test_work_spreads_across_hosts_and_survives_a_killed_host(
        cluster: Cluster, big_file: Path) -> None:
    with _explained(cluster):
        _spread_then_kill(cluster, big_file)


def _spread_then_kill(cluster: Cluster, big_file: Path) -> None:
    files = _inputs(big_file, "first")
    first = _submit(cluster, files)
    assert _wait_final(cluster, first)["status"] == "Complete"
    _check_exactly_once(cluster, first, files)
    spread = cluster.done_by(first)
    assert all(spread.values()), f"a worker host did no file: {spread}"
    assert sorted(sum(spread.values(), [])) == list(range(FILES)), spread

    files = _inputs(big_file, "second")
    second = _submit(cluster, files)
    victim = cluster.workers["w1"]
    scratch = cluster.logs / "scratch-w1" / f"delivery-worker-{victim.pid}"
    deadline = time.monotonic() + 60
    while True:  # midway: some files done, and w1 holding one it is working on
        done = _status(cluster, second)["files-completed"] or 0
        if 2 <= done < FILES - 1 and any(scratch.glob("file-*")):
            break
        assert done < FILES - 1 and time.monotonic() < deadline, \
            f"never caught w1 mid-file ({done} files done)"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    before = cluster.done_by(second)["w1"]
    assert _wait_final(cluster, second)["status"] == "Complete"
    _check_exactly_once(cluster, second, files)
    after = cluster.done_by(second)
    assert after["w1"] == before  # the dead host did nothing more
    recorded = Counter(sum(after.values(), []))
    assert set(recorded) == set(range(FILES)), after
    shutil.rmtree(cluster.logs / "scratch-w1", ignore_errors=True)

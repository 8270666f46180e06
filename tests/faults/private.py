"""Servers of the fault suite's own, to stop and start while the shared ones stay up.

- :class:`PrivateRabbit`: a RabbitMQ node with its own name, ports and data
  directory, run as the ``rabbitmq`` user (it shares the Erlang cookie and epmd
  with the machine's node, nothing else). About 3 s to start.
- :class:`PrivatePostgres`: ``initdb`` and ``pg_ctl`` as the ``postgres`` user
  in a temporary directory, on a free port (fsync off). About 1 s to create.
- :class:`Moto`: a ``moto_server`` on a fixed port (S3 keeps nothing across a
  restart: objects live in its memory).

Stopping the machine's shared RabbitMQ or PostgreSQL would break everyone else's
tests, so these are the only servers the suite ever stops. They need root (to
run as the service users); elsewhere the tests skip (CI=true: fail). Their
ports lie below the kernel's ephemeral range (:func:`stable_port`), so no
outgoing connection can take one while its server is down for a restart.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from servers import LOOPBACK, free_port, require_service, skip_or_fail, wait_for_port

__all__ = ["PrivateRabbit", "PrivatePostgres", "Moto"]

RABBIT = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def stable_port() -> int:
    """A free port outside the kernel's ephemeral range, so it stays free while the
    server on it is down: nobody's outgoing connection is given it meanwhile."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(10_000, max(low, 10_001))
        if port in (15672, 25672):  # RabbitMQ's management and distribution defaults
            continue
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
                return port
            except OSError:
                continue
    return free_port()


def _service_dir(user: str) -> Path:
    """A temporary directory ``user`` owns (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0:
        skip_or_fail(f"running servers as {user!r} needs root")
    require_service("runuser", "runuser not installed (util-linux)")
    path = Path(tempfile.mkdtemp(prefix=f"faults-{user}-", dir="/tmp"))
    shutil.chown(path, user, user)
    return path


def _run_as(user: str, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(["runuser", "-u", user, "--", "env", *extra, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


class PrivateRabbit:
    def __init__(self) -> None:
        if not os.path.exists(RABBIT):
            skip_or_fail(f"RabbitMQ not installed ({RABBIT} missing)")
        self.base = _service_dir("rabbitmq")
        self.port, self.dist = stable_port(), stable_port()
        self.node = f"faults{self.port}@localhost"
        self.url = f"amqp://guest:guest@{LOOPBACK}:{self.port}/%2F"
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = {LOOPBACK}:{self.port}\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir()
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.base)], check=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        env = {"HOME": "/var/lib/rabbitmq", "RABBITMQ_NODENAME": self.node,
               "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist),
               "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.base / "log"),
               "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
               "RABBITMQ_PID_FILE": str(self.base / "pid")}
        with open(self.base / "console.log", "ab") as out:
            self.proc = subprocess.Popen(
                ["runuser", "-u", "rabbitmq", "--", "env", *(f"{k}={v}" for k, v in env.items()),
                 RABBIT], stdout=out, stderr=out, start_new_session=True, cwd=self.base)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.base / "console.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private RabbitMQ node did not start:\n{log}")
            time.sleep(0.2)

    def answers(self) -> bool:
        import pika

        try:
            pika.BlockingConnection(pika.URLParameters(self.url)).close()
            return True
        except Exception:  # noqa: BLE001 - not up (yet)
            return False

    def stop(self) -> None:
        """The whole node down, as a crash or a host restart would take it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], capture_output=True,
                       timeout=60, check=False)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # the session started for this node, nothing else
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(
        f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        skip_or_fail(f"PostgreSQL's {name} not found (Debian package postgresql)")
    return str(found)


class PrivatePostgres:
    def __init__(self) -> None:
        self.base = _service_dir("postgres")
        self.data = self.base / "data"
        self.port = stable_port()
        self.url = f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/postgres"
        done = _run_as("postgres", _pg_bin("initdb"), "-D", str(self.data), "-A", "trust",
                       "-U", "postgres", "--no-sync", "-E", "UTF8")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")

    def _ctl(self, *args: str) -> None:
        done = _run_as("postgres", _pg_bin("pg_ctl"), "-D", str(self.data), "-w", *args)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {done.stderr[-2000:]}")

    def start(self) -> None:
        self._ctl("-l", str(self.base / "log"), "-o",
                  f"-p {self.port} -k {self.base} -c listen_addresses={LOOPBACK} -c fsync=off",
                  "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def close(self) -> None:
        _run_as("postgres", _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


class Moto:
    def __init__(self) -> None:
        self.binary = require_service("moto_server",
                                      "moto_server not installed (pip install 'moto[server]')")
        self.port = stable_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-H", LOOPBACK, "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(LOOPBACK, self.port, 30):
            raise RuntimeError(f"moto_server did not listen on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

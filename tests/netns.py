"""Test hosts on one machine: Linux network namespaces joined by a bridge.

:func:`network` creates, for each named host, a namespace (``ip netns``) with
its own loopback and an ``eth0`` on a fresh /24, joined by veth pairs to a
bridge in the root namespace, which holds the subnet's ``.1`` (the "host"
machine: where the shared services are reached). Names carry a random tag, so
runs never collide; everything is removed on exit, processes inside the
namespaces first, even when the body failed.

The shared RabbitMQ and PostgreSQL listen on loopback only, so
:func:`tcp_forwarder` relays a port on the bridge address to them: the hosts
reach them over the veth network (they see the bridge address, the services see
a loopback client, so RabbitMQ's ``guest`` login keeps working).

Only what needs root is here; :func:`require_netns` skips (or fails, with
``CI=true``) when namespaces cannot be made.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from servers import skip_or_fail

IP = shutil.which("ip") or "/usr/sbin/ip"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([IP, *args], capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def require_netns() -> None:
    """Skip (fail in CI) unless we are root and may create a namespace and a bridge."""
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root")
    if not os.path.exists(IP):
        skip_or_fail("`ip` not found (Debian package iproute2)")
    probe = f"cdprobe{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode:
        skip_or_fail(f"cannot create a network namespace: {made.stderr.strip()}")
    _ip("netns", "del", probe, check=False)


@dataclass
class Network:
    tag: str
    bridge: str
    gateway: str  # the root namespace's address on the bridge
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> address
    namespaces: dict[str, str] = field(default_factory=dict)  # host name -> netns name

    def exec(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace (``ip netns exec`` execs it: same pid)."""
        return [IP, "netns", "exec", self.namespaces[host], *argv]


def _free_subnet() -> str:
    """A 10.x.y.0/24 that no route of this machine uses yet (its first three octets)."""
    routes = _ip("-4", "route", "show", "table", "all").stdout
    for _ in range(100):
        prefix = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        if f"{prefix}." not in routes:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 subnet found")


def _pids_in(namespace: str) -> list[int]:
    found = _ip("netns", "pids", namespace, check=False).stdout.split()
    return [int(pid) for pid in found if pid.isdigit()]


def _teardown(net: Network) -> None:
    for namespace in net.namespaces.values():
        for pid in _pids_in(namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        _ip("netns", "del", namespace, check=False)  # takes its veth end, so the pair goes
    for index in range(len(net.namespaces)):
        _ip("link", "del", f"cd{net.tag}h{index}", check=False)  # if the netns del failed
    _ip("link", "del", net.bridge, check=False)


@contextlib.contextmanager
def network(hosts: list[str]) -> Iterator[Network]:
    """One namespace per host name on a private bridge; all removed on exit."""
    tag = secrets.token_hex(3)  # interface names: at most 15 characters
    prefix = _free_subnet()
    net = Network(tag, f"cd{tag}br", f"{prefix}.1")
    try:
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for index, host in enumerate(hosts):
            namespace, outer, inner = f"cd{tag}-{host}", f"cd{tag}h{index}", f"cd{tag}n{index}"
            _ip("netns", "add", namespace)
            net.namespaces[host] = namespace
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "master", net.bridge)
            _ip("link", "set", outer, "up")
            _ip("link", "set", inner, "netns", namespace)
            address = f"{prefix}.{index + 2}"
            _ip("-n", namespace, "link", "set", inner, "name", "eth0")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            net.hosts[host] = address
        yield net
    finally:
        _teardown(net)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tcp_forwarder(listen: str, target: tuple[str, int]) -> Iterator[int]:
    """Relay connections to ``listen``:<port> on to ``target``; yields the port."""
    server = socket.create_server((listen, 0))
    server.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            conns.extend([client, upstream])
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=accept, name="tcp-forwarder", daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

"""Real local servers (XRootD and HTTP with byte ranges) for integration tests.

Everything here is plain Python (context managers); the pytest fixtures live in
``tests/conftest_servers.py``. Only :func:`skip_or_fail` imports pytest, lazily.

XRootD
------
:func:`xrootd_server` runs Debian's ``xrootd`` daemon (package ``xrootd-server``)
on a free loopback port, exporting one directory read-only with no
authentication. It yields the base URL ``"root://127.0.0.1:PORT/"``.

Files are addressed by their **absolute** filesystem path, which gives a
**double slash** after the port::

    root://127.0.0.1:PORT//tmp/xrootd-served-abc/sub/file.root

i.e. ``base_url + str(absolute_path)``; :func:`served_url` does this. A single
slash (``root://127.0.0.1:PORT/tmp/...``) is a *relative* path and the server
answers ``[3010] Opening relative path ... is disallowed``. Checked with the
``xrootd`` PyPI client and ``fsspec-xrootd``:

* ``uproot.open("root://127.0.0.1:PORT//abs/file.root")`` works with uproot's
  default handler (``FSSpecSource`` over fsspec-xrootd) and with
  ``handler=uproot.source.xrootd.XRootDSource``;
* ``fsspec.filesystem("root", hostid="127.0.0.1:PORT")`` takes plain absolute
  paths: ``fs.ls("/abs/dir")``, ``fs.glob("/abs/dir/*.root")``;
* ``fsspec.open_files("root://127.0.0.1:PORT//abs/dir/*.root")`` globs, and each
  ``OpenFile.full_name`` is again ``root://127.0.0.1:PORT//abs/dir/x.root``.

Pitfalls:

* fsspec-xrootd 0.5's ``fs.ls(path, detail=False)`` returns *basenames*, not full
  paths (``detail=True`` gives full paths in ``"name"``; ``glob`` gives full
  paths);
* only the exported directory and below can be listed/opened; its parent gives
  ``[3010] ... is disallowed``;
* xrootd refuses to run as root, so as root it is started with ``-R xrootd``
  and drops to that user: the served directory and all its ancestors must be
  world-executable and the files world-readable. ``/tmp/pytest-of-root`` is
  0700, so pytest's ``tmp_path`` is NOT reachable; use :func:`served_tempdir`
  (a fresh 0755 directory directly under ``/tmp``);
* xrootd listens on all interfaces (``*:PORT``); the config only admits
  clients from loopback (``xrd.allow host``).

HTTP
----
:func:`http_range_server` is a threaded stdlib server with real HTTP range
support: ``Range: bytes=a-b`` gives ``206`` + ``Content-Range``; several ranges
(``bytes=a-b, c-d``, as sent by ``uproot.source.http.HTTPSource``) give a
``multipart/byteranges`` body; unsatisfiable ranges give ``416``; HEAD gives
``Content-Length``; missing files give 404; nothing outside the served
directory is reachable (``..`` is dropped, symlinks out of the tree are 404).
URLs are relative to the served directory: ``http://127.0.0.1:PORT/sub/f.root``.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import pwd
import shutil
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

LOOPBACK = "127.0.0.1"
XROOTD_USER = "xrootd"  # created by Debian's xrootd-server package
_SERVED_TMP_PARENT = "/tmp"  # world-traversable (1777) on Debian


# ---------------------------------------------------------------------------
# skip / fail policy
# ---------------------------------------------------------------------------


def in_ci() -> bool:
    """True when the ``CI`` environment variable says we run in CI (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test, or fail it when running in CI (``CI=true``).

    Locally a missing service should not break the suite; in CI it must, or
    integration tests would silently stop running.
    """
    import pytest

    if in_ci():
        pytest.fail(f"{reason} (CI=true: missing services are failures, not skips)", pytrace=False)
    pytest.skip(reason)


def require_service(name: str, reason: str | None = None) -> str:
    """Return the path of executable ``name``, or :func:`skip_or_fail` if absent."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(reason or f"{name!r} executable not found on PATH")
    return path


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until ``host:port`` accepts TCP connections; False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def served_tempdir(prefix: str = "served-") -> Iterator[Path]:
    """A fresh empty directory under ``/tmp`` with mode 0755, removed on exit.

    Reachable by the unprivileged ``xrootd`` user (unlike pytest's tmp_path).
    """
    parent = _SERVED_TMP_PARENT if os.path.isdir(_SERVED_TMP_PARENT) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_world_readable(directory: str | os.PathLike[str]) -> None:
    """chmod a tree so another user can read it: dirs ``a+rx``, files ``a+r``."""
    root = Path(directory)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = 0o555 if path.is_dir() else 0o444
        path.chmod(stat.S_IMODE(mode) | extra)


def served_url(
    base_url: str, served_dir: str | os.PathLike[str], path: str | os.PathLike[str]
) -> str:
    """URL of ``path`` (absolute, or relative to ``served_dir``) on either server.

    ``root://`` URLs carry the absolute path (hence ``//``); ``http://`` URLs the
    path relative to the served directory.
    """
    served = Path(served_dir).resolve()
    target = Path(path) if Path(path).is_absolute() else served / path
    if base_url.startswith("root://"):
        return base_url.rstrip("/") + "/" + target.resolve().as_posix()
    return base_url.rstrip("/") + "/" + target.resolve().relative_to(served).as_posix()


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


# ---------------------------------------------------------------------------
# XRootD
# ---------------------------------------------------------------------------


class XRootDStartError(RuntimeError):
    """The xrootd daemon could not be started."""


def _check_reachable_by_others(directory: Path) -> None:
    for ancestor in [directory, *directory.parents]:
        if not ancestor.stat().st_mode & stat.S_IXOTH:
            raise XRootDStartError(
                f"{ancestor} is not world-executable, so the {XROOTD_USER!r} user cannot "
                f"reach the served directory {directory}; serve a directory under /tmp "
                "(see served_tempdir())"
            )


def _xrootd_config(exported: Path, admin: Path) -> str:
    return "\n".join(
        [
            "# generated by tests/servers.py: read-only export, no authentication",
            f"all.export {exported} r/o",
            f"all.adminpath {admin}",
            f"all.pidpath {admin}",
            # xrootd binds *:PORT; only admit loopback clients.
            "xrd.allow host 127.0.0.1",
            "xrd.allow host localhost",
            "xrootd.trace off",
            "",
        ]
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


@contextlib.contextmanager
def xrootd_server(
    directory: str | os.PathLike[str],
    *,
    timeout: float = 15.0,
    binary: str = "xrootd",
) -> Iterator[str]:
    """Serve ``directory`` read-only over XRootD on loopback; yield ``"root://127.0.0.1:PORT/"``.

    Open files as ``base_url + "/abs/path/file.root"`` (note the resulting double
    slash), e.g. via :func:`served_url`. Directory listing and globbing work for
    ``directory`` and below. Files added while the server runs are visible at
    once, but must be world-readable when running as root (default umask 022
    is fine; :func:`make_world_readable` fixes copies of read-only files too).

    Raises :class:`XRootDStartError` if the binary is missing, the directory is
    unreachable for the ``xrootd`` user, or the server is not up within
    ``timeout`` seconds. The server is stopped (SIGTERM, then SIGKILL) and its
    scratch files removed on exit.
    """
    exe = shutil.which(binary)
    if exe is None:
        raise XRootDStartError(f"{binary!r} not found (Debian package xrootd-server)")
    exported = Path(directory).resolve()
    if not exported.is_dir():
        raise XRootDStartError(f"not a directory: {exported}")

    as_root = os.geteuid() == 0
    run_as: list[str] = []
    owner: tuple[int, int] | None = None
    if as_root:  # xrootd refuses to run as root; -R drops to an unprivileged user
        try:
            pw = pwd.getpwnam(XROOTD_USER)
        except KeyError:
            raise XRootDStartError(
                f"running as root but user {XROOTD_USER!r} does not exist (install xrootd-server)"
            ) from None
        run_as = ["-R", XROOTD_USER]
        owner = (pw.pw_uid, pw.pw_gid)
        _check_reachable_by_others(exported)

    with served_tempdir(prefix="xrootd-run-") as scratch:
        admin = scratch / "admin"
        admin.mkdir()
        if owner is not None:
            os.chown(admin, *owner)
        config = scratch / "xrootd.cfg"
        config.write_text(_xrootd_config(exported, admin))
        config.chmod(0o644)
        log = admin / "xrootd.log"
        console = scratch / "console.log"

        proc: subprocess.Popen[bytes] | None = None
        failure = ""
        try:
            for _attempt in range(3):  # retry if the free port got taken meanwhile
                port = free_port()
                with console.open("ab") as out:
                    proc = subprocess.Popen(
                        [exe, *run_as, "-p", str(port), "-c", str(config), "-l", str(log)],
                        cwd=scratch,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # no terminal signals from pytest's group
                    )
                if _wait_xrootd_ready(proc, port, log, timeout):
                    break
                _terminate(proc)
                failure = (
                    f"xrootd (exit code {proc.returncode}) not ready on port {port} within {timeout} s\n"
                    f"--- console ---\n{_tail(console)}\n--- log ---\n{_tail(log)}"
                )
                proc = None
            if proc is None:
                raise XRootDStartError(failure)
            yield f"root://{LOOPBACK}:{port}/"
        finally:
            if proc is not None:
                _terminate(proc)


def _wait_xrootd_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if wait_for_port(LOOPBACK, port, 0.2):
            # The port opens during start-up; this log line marks the end of it:
            # "------ xrootd anon@host:PORT initialization completed."
            with contextlib.suppress(OSError):
                if f":{port} initialization completed" in log.read_text(errors="replace"):
                    return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------
# HTTP with byte ranges
# ---------------------------------------------------------------------------


class _RangeNotSatisfiable(Exception):
    pass


def parse_range_header(header: str, size: int) -> list[tuple[int, int]] | None:
    """Parse ``Range: bytes=...`` into inclusive ``(first, last)`` pairs (RFC 9110 14.2).

    Returns None if the header is not a valid byte-range set (the server then
    ignores it and sends the whole file). Raises :class:`_RangeNotSatisfiable`
    if no range overlaps the file. Ranges are kept in request order, unmerged.
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    valid = 0
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        first_s, dash, last_s = part.partition("-")
        first_s, last_s = first_s.strip(), last_s.strip()
        if not dash or not (first_s.isdigit() or (first_s == "" and last_s.isdigit())):
            return None
        if last_s and not last_s.isdigit():
            return None
        valid += 1
        if first_s == "":  # suffix range: the last N bytes
            length = int(last_s)
            if length > 0 and size > 0:
                ranges.append((max(0, size - length), size - 1))
            continue
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
        if last < first:
            return None
        if first < size:
            ranges.append((first, min(last, size - 1)))
    if valid == 0:
        return None
    if not ranges:
        raise _RangeNotSatisfiable
    return ranges


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus byte ranges (single and multipart)."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length
    server_version = "RangeHTTP/1.0"
    _COPY_CHUNK = 1 << 16

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    # -- internals ---------------------------------------------------------

    def _resolve(self) -> Path | None:
        """Filesystem path for the request, or None if it escapes the served dir."""
        root = Path(self.directory).resolve()
        target = Path(self.translate_path(self.path)).resolve()  # drops '..', then symlinks
        if target != root and root not in target.parents:
            return None
        return target

    def _serve(self, send_body: bool) -> None:
        target = self._resolve()
        if target is None:
            self.send_error(404, "File not found")
            return
        if target.is_dir():  # stdlib: trailing-slash redirect, index.html or HTML listing
            if send_body:
                super().do_GET()
            else:
                super().do_HEAD()
            return
        try:
            f = target.open("rb")
        except OSError:
            self.send_error(404, "File not found")
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            ctype = self.guess_type(str(target))
            header = self.headers.get("Range")
            try:
                ranges = parse_range_header(header, size) if header else None
            except _RangeNotSatisfiable:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return

            if ranges is None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if send_body:
                    self._copy(f, 0, size)
            elif len(ranges) == 1:
                first, last = ranges[0]
                self.send_response(206)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.send_header("Content-Length", str(last - first + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if send_body:
                    self._copy(f, first, last - first + 1)
            else:
                self._send_multipart(f, ranges, size, ctype, send_body)

    def _send_multipart(
        self, f: BinaryIO, ranges: list[tuple[int, int]], size: int, ctype: str, send_body: bool
    ) -> None:
        boundary = uuid.uuid4().hex
        heads = [
            (
                f"--{boundary}\r\n"
                f"Content-Type: {ctype}\r\n"
                f"Content-Range: bytes {first}-{last}/{size}\r\n"
                "\r\n"
            ).encode("ascii")
            for first, last in ranges
        ]
        tail = f"--{boundary}--\r\n".encode("ascii")
        # each part: head + data + CRLF (the CRLF belongs to the next delimiter)
        length = sum(
            len(h) + (last - first + 1) + 2 for h, (first, last) in zip(heads, ranges, strict=True)
        )
        length += len(tail)
        self.send_response(206)
        self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not send_body:
            return
        for head, (first, last) in zip(heads, ranges, strict=True):
            self.wfile.write(head)
            self._copy(f, first, last - first + 1)
            self.wfile.write(b"\r\n")
        self.wfile.write(tail)

    def _copy(self, f: BinaryIO, start: int, length: int) -> None:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(length, self._COPY_CHUNK))
            if not chunk:  # file shrank underneath us; the client sees a short body
                break
            self.wfile.write(chunk)
            length -= len(chunk)


class ThreadingRangeHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True  # keep-alive connections must not block shutdown
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients (uproot, aiohttp) drop keep-alive connections; don't print those.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a possibly slow DNS lookup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


@contextlib.contextmanager
def http_range_server(directory: str | os.PathLike[str]) -> Iterator[str]:
    """Serve ``directory`` over HTTP on loopback; yield ``"http://127.0.0.1:PORT/"``.

    URLs are relative to ``directory``. Runs in a background thread; stopped on exit.
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise NotADirectoryError(str(root))
    handler = functools.partial(RangeRequestHandler, directory=str(root))
    server = ThreadingRangeHTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="http-range"
    )
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def s3_server(timeout: float = 20.0) -> Iterator[str]:
    """An S3 endpoint on loopback, yielding ``"http://127.0.0.1:PORT"``.

    MinIO's binary cannot be installed here, so this runs ``moto_server`` (PyPI
    ``moto[server]``), a real HTTP S3 implementation in its own process.
    """
    binary = require_service("moto_server", "moto_server not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([binary, "-H", LOOPBACK, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_port(LOOPBACK, port, timeout):
            raise RuntimeError(f"moto_server did not listen on {LOOPBACK}:{port} in {timeout} s")
        yield f"http://{LOOPBACK}:{port}"
    finally:
        _terminate(proc)

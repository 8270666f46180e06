"""Supervision of ``delivery up``'s children: the API and N workers.

A worker that dies is started again after a backoff (1 s, doubling to 30 s;
back to 1 s once it has run a minute), and the death is logged. If the API
dies, everything stops (exit 1). On SIGINT or SIGTERM: SIGTERM to the workers,
which finish their current file; once they have exited (or after ``grace``
seconds, or on a second signal: then they are killed), SIGINT to the API, which
``delivery serve`` takes as its clean stop. Children's output is relayed line by
line as ``name | line``, with every secret given replaced by ``***``.

Children get their own session, so a terminal's Ctrl-C reaches only the
supervisor, which orders the shutdown; and (Linux) each asks the kernel for a
SIGTERM should the supervisor die without cleaning up, so no worker outlives
it. The supervisor is one thread (forking with a ``preexec_fn`` is only safe
without other threads): ``select`` on the children's pipes is its clock.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["Child", "Supervisor"]

BACKOFF_START, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0  # seconds
API_READY_TIMEOUT = 120.0
API_GRACE = 15.0
_TICK = 0.2
_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = BACKOFF_START
    due: float | None = None  # when a dead worker is started again
    partial: bytes = b""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _died(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, api: Child, workers: list[Child], env: dict[str, str], api_url: str,
                 *, secrets_: list[str], grace: float = 300.0, out: TextIO | None = None) -> None:
        self.api, self.workers, self.env, self.api_url = api, workers, env, api_url
        self.secrets = sorted({s for s in secrets_ if s}, key=len, reverse=True)
        self.grace = grace
        self.out = out or sys.stdout
        self.stopping = self.forced = False
        self._parent = os.getpid()
        self._libc: Any = None
        if sys.platform.startswith("linux"):
            try:
                self._libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork
            except OSError:
                self._libc = None

    # -- output --------------------------------------------------------------

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def say(self, line: str, name: str = "up") -> None:
        self.out.write(f"{name:>9} | {self._mask(line)}\n")
        self.out.flush()

    def _children(self) -> list[Child]:
        return [self.api, *self.workers]

    def pump(self, timeout: float) -> None:
        """Relay whatever the children wrote, waiting at most ``timeout`` seconds."""
        fds = {c.proc.stdout.fileno(): c for c in self._children()
               if c.proc is not None and c.proc.stdout is not None and not c.proc.stdout.closed}
        if not fds:
            time.sleep(timeout)
            return
        ready, _, _ = select.select(list(fds), [], [], timeout)
        for fd in ready:
            self._read(fds[fd])

    def _read(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        try:
            data = os.read(child.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:  # end of file: the child is gone
            if child.partial:
                self.say(child.partial.decode(errors="replace"), child.name)
                child.partial = b""
            child.proc.stdout.close()
            return
        *lines, child.partial = (child.partial + data).split(b"\n")
        for line in lines:
            self.say(line.decode(errors="replace").rstrip("\r"), child.name)

    def _drain(self, child: Child) -> None:
        """Relay a dead child's last output, then close its pipe (bounded: a grandchild
        could hold the pipe open)."""
        deadline = time.monotonic() + 1.0
        pipe = child.proc.stdout if child.proc is not None else None
        while pipe is not None and not pipe.closed and time.monotonic() < deadline:
            if select.select([pipe], [], [], 0.1)[0]:
                self._read(child)
        if pipe is not None and not pipe.closed:
            if child.partial:
                self.say(child.partial.decode(errors="replace"), child.name)
                child.partial = b""
            pipe.close()

    # -- children ------------------------------------------------------------

    def _preexec(self) -> None:
        # Runs in the child between fork and exec: ask for SIGTERM when we die.
        if self._libc is not None:
            self._libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self._parent:  # we died before prctl took effect
            os._exit(1)

    def spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=self._preexec)
        assert child.proc.stdout is not None
        os.set_blocking(child.proc.stdout.fileno(), False)
        child.started, child.due, child.partial = time.monotonic(), None, b""
        self.say(f"{child.name} started (pid {child.proc.pid})")

    def _tend(self, worker: Child) -> None:
        """Notice a dead worker and start it again once its backoff has passed."""
        now = time.monotonic()
        if worker.proc is not None and worker.proc.poll() is not None:
            self._drain(worker)
            ran = now - worker.started
            if ran >= STABLE_AFTER:
                worker.backoff = BACKOFF_START
            self.say(f"{worker.name} (pid {worker.proc.pid}) {_died(worker.proc.returncode)} "
                     f"after {ran:.1f} s; restarting in {worker.backoff:g} s")
            worker.due = now + worker.backoff
            worker.backoff = min(worker.backoff * 2, BACKOFF_MAX)
            worker.proc = None
        if worker.proc is None and worker.due is not None and now >= worker.due:
            self.spawn(worker)

    def _api_ready(self) -> bool:
        deadline = time.monotonic() + API_READY_TIMEOUT
        while time.monotonic() < deadline and not self.stopping:
            if not self.api.alive():
                return False
            try:
                # /readyz is public and answers 200 only once the database and broker do.
                with urllib.request.urlopen(self.api_url + "/readyz", timeout=2):  # noqa: S310
                    return True
            except urllib.error.HTTPError as err:
                if err.code != 503:
                    return True  # it serves, whatever this route says
            except OSError:
                pass
            self.pump(_TICK)
        return False

    # -- the whole life ------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.forced = self.stopping
        self.stopping = True

    def run(self) -> int:
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.spawn(self.api)
            if not self._api_ready():
                if not self.stopping:
                    self._drain(self.api)
                    state = _died(self.api.proc.returncode) if self.api.proc and \
                        self.api.proc.poll() is not None else "did not answer"
                    self.say(f"error: the API {state}; stopping (its output is above)")
                    code = 1
            else:
                for worker in self.workers:
                    self.spawn(worker)
                self.say(f"ready: API on {self.api_url}, {len(self.workers)} worker(s); "
                         "Ctrl-C stops (workers finish their current file)")
                code = self._supervise()
        finally:
            self._shutdown()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return code

    def _supervise(self) -> int:
        while not self.stopping:
            self.pump(_TICK)
            if self.api.proc is not None and self.api.proc.poll() is not None:
                self._drain(self.api)
                self.say(f"error: the API (pid {self.api.proc.pid}) "
                         f"{_died(self.api.proc.returncode)}; stopping")
                return 1
            for worker in self.workers:
                self._tend(worker)
        return 0

    def _wait(self, children: list[Child], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while any(c.alive() for c in children) and time.monotonic() < deadline \
                and not self.forced:
            self.pump(_TICK)

    def _shutdown(self) -> None:
        workers = [w for w in self.workers if w.alive()]
        if workers:
            self.say(f"stopping {len(workers)} worker(s): each finishes its current file "
                     "(Ctrl-C again to kill them)")
            for worker in workers:
                assert worker.proc is not None
                worker.proc.send_signal(signal.SIGTERM)
            self._wait(workers, self.grace)
            self._kill([w for w in workers if w.alive()])
        if self.api.alive():
            assert self.api.proc is not None
            self.api.proc.send_signal(signal.SIGINT)  # `delivery serve` stops cleanly on it
            self._wait([self.api], API_GRACE)
            self._kill([self.api] if self.api.alive() else [])
        for child in self._children():
            if child.proc is not None:
                child.proc.wait()
                self._drain(child)
        self.say("stopped")

    def _kill(self, children: list[Child]) -> None:
        for child in children:
            assert child.proc is not None
            self.say(f"killing {child.name} (pid {child.proc.pid})")
            child.proc.kill()

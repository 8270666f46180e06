"""Run one file's transform in a child process, so that no file can take the worker down.

The worker forks a child for each file: the engine's modules are already
imported, so a child costs milliseconds, not the second a fresh interpreter
takes. The child runs the transform and sends its result (or its error) back
over a pipe; the worker watches it. What can happen, and what the worker makes
of it:

- a result or a :class:`~delivery.errors.DeliveryError`: as if it ran in the worker;
- more memory than ``Limits.memory`` (the child's resident set, watched by the
  worker every 50 ms, or an allocation refused by the child's address-space cap
  of its size at birth plus the limit): the child is killed and
  :class:`OutOfMemory` raised. Permanent: the same file needs as much memory on
  its next delivery. The resident set counts the ~150 MB of libraries the child
  shares with the worker, so the limit is what the whole transform process may use;
- more time than ``Limits.seconds``: killed, :class:`FileTimeout`. Transient: a
  stalled server may answer later, or to another worker;
- death by a signal or an unexpected exit (a segfault, ``os._exit``, the kernel's
  OOM killer), or a bug of ours: :class:`ChildCrashed`. Transient: the broker's
  delivery limit decides when to give up.

The child dies with the worker (``PR_SET_PDEATHSIG``), ignores SIGINT and
SIGTERM (the worker decides when a file stops: it finishes the file first),
holds none of the worker's sockets, and leaves through ``os._exit``, so it never
runs the worker's exit handlers. Without ``os.fork`` (Windows) the transform runs
in the worker itself, without limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from delivery.config import Settings
from delivery.errors import DeliveryError, PermanentError, TransientError

__all__ = ["Limits", "run_isolated", "Contained", "FileTimeout", "ChildCrashed", "OutOfMemory",
           "describe_memory"]

T = TypeVar("T")
_WATCH = 0.05  # seconds between two looks at the child's memory
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Limits:
    """Per file: ``seconds`` of wall time and ``memory`` bytes (None: unlimited)."""

    seconds: float | None = 600.0
    memory: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.file_timeout, settings.worker_memory)


class Contained(TransientError):
    """The child failed in a way the worker survived; not worth retrying in the same run."""


class FileTimeout(Contained):
    pass


class ChildCrashed(Contained):
    pass


class OutOfMemory(PermanentError):
    pass


def describe_memory(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value.is_integer() or value >= 100 \
                else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _memory_error(limit: int | None) -> OutOfMemory:
    if limit:
        return OutOfMemory(f"transforming this file needs more than {describe_memory(limit)} "
                           "of memory (the worker's limit, DELIVERY_WORKER_MEMORY); the "
                           "transform was stopped")
    return OutOfMemory("transforming this file needs more memory than the worker has")


def _caused_by_memory(err: BaseException | None) -> bool:
    seen = 0
    while err is not None and seen < 10:  # uproot and our classify() wrap the MemoryError
        if isinstance(err, MemoryError):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * _PAGE


def _child(fn: Callable[[], Any], out: int, parent: int, memory: int | None) -> None:
    code = 0
    try:
        _die_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.closerange(3, out)  # the worker's broker, store and API sockets stay its own
        os.closerange(out + 1, 1 << 16)
        if memory:
            # A backstop for one huge allocation (a decompression bomb's basket): it
            # fails at once instead of growing until the watcher sees it.
            with contextlib.suppress(OSError, ValueError):
                cap = _vm_size() + memory
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            outcome: tuple[str, Any] = ("ok", fn())
        except BaseException as err:  # noqa: BLE001 - everything goes back to the worker
            if _caused_by_memory(err):
                outcome = ("memory", None)
            elif isinstance(err, DeliveryError):
                outcome = ("error", err)
            else:
                outcome = ("bug", f"{type(err).__name__}: {err}")
        try:
            data = pickle.dumps(outcome)
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable error
            data = pickle.dumps(("bug", f"unpicklable outcome: {err}"))
        with os.fdopen(out, "wb") as pipe:
            pipe.write(data)
    except BaseException:  # noqa: BLE001
        code = 70
    finally:
        os._exit(code)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = f"{signal.Signals(sig).name}, {signal.strsignal(sig)}"
        except ValueError:
            name = f"signal {sig}"
        hint = " (the system's out-of-memory killer?)" if sig == signal.SIGKILL else ""
        return f"the transform process was killed by {name}{hint}"
    return f"the transform process exited with code {os.waitstatus_to_exitcode(status)}"


def run_isolated(fn: Callable[[], T], limits: Limits, what: str = "the file") -> T:
    """``fn()`` in a forked child within ``limits``; raises as described in the module."""
    if not hasattr(os, "fork"):
        return fn()
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        _child(fn, write_end, parent, limits.memory)
    os.close(write_end)
    started = time.monotonic()
    chunks: list[bytes] = []
    status, finished = 0, False
    try:
        while True:
            wait = _WATCH if limits.memory else 1.0
            if limits.seconds is not None:
                left = started + limits.seconds - time.monotonic()
                if left <= 0:
                    raise FileTimeout(f"{what} took longer than {limits.seconds:g} s "
                                      "(DELIVERY_FILE_TIMEOUT); its transform was killed")
                wait = min(wait, left)
            ready, _, _ = select.select([read_end], [], [], wait)
            if ready:
                data = os.read(read_end, 1 << 16)
                if not data:
                    finished = True  # the child is done, or dead
                    break
                chunks.append(data)
            elif limits.memory and _rss(pid) > limits.memory:
                raise _memory_error(limits.memory)
    finally:
        os.close(read_end)
        if not finished:  # timed out, out of memory, or this thread was interrupted
            _kill(pid)
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(pid, 0)
    kind: str = "died"
    value: Any = None
    with contextlib.suppress(Exception):  # none, or torn: the child died while writing
        kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    if kind == "error" and isinstance(value, DeliveryError):
        raise value
    if kind == "memory":
        raise _memory_error(limits.memory)
    if kind == "bug":
        raise ChildCrashed(f"the transform failed unexpectedly: {value}")
    raise ChildCrashed(_exit_reason(status))

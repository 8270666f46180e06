"""Progress of a delivery: two bars per sample, ``transform`` and ``download``.

``transform`` counts files done or failed on the server out of the request's
files; ``download`` counts files downloaded (or found in the local cache).

Where it is drawn (:func:`make_progress`):

- ``enabled=False``: nowhere (quiet mode).
- a terminal or Jupyter: ``tqdm.auto`` if it is installed (in Jupyter with
  ipywidgets it draws notebook widgets, else text bars), else ``rich`` if it
  is installed (neither is a dependency), else plain lines;
- anything else (a log file, a pipe, CI): plain lines on stderr, only at 0 %,
  at each further 10 % and at 100 %, so logs stay short.
- ``$DELIVERY_PROGRESS`` overrides the choice: ``tqdm``, ``rich``, ``plain`` or
  ``off`` (``auto``, the default, is the rule above). A display that cannot be
  imported falls back to plain lines.

:meth:`Progress.start` is called in the caller's thread before any follower
starts, so every bar exists (in order: each sample's transform, then download)
where the call was made, e.g. under the Jupyter cell that runs ``deliver``;
every other method is thread-safe: followers and download threads report directly.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["Progress", "make_progress"]

BARS = ("transform", "download")


class Progress(Protocol):
    def start(self, samples: Iterable[str]) -> None:
        """Draw both bars of each sample at 0 (total not known yet)."""

    def update(self, sample: str, bar: str, done: int, total: int | None) -> None:
        """Set ``bar`` (``"transform"`` or ``"download"``) of ``sample`` to ``done``/``total``
        (``total`` None: not known yet)."""

    def close(self) -> None: ...


class _Start:
    def start(self, samples: Iterable[str]) -> None:
        for sample in samples:
            for bar in BARS:
                self.update(sample, bar, 0, None)

    def update(self, sample: str, bar: str, done: int, total: int | None) -> None:
        raise NotImplementedError


class Quiet(_Start):
    def update(self, sample: str, bar: str, done: int, total: int | None) -> None:
        pass

    def close(self) -> None:
        pass


class PlainLines(_Start):
    """One line per bar at 0 %, each further 10 % and 100 %, on stderr."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], int] = {}

    def update(self, sample: str, bar: str, done: int, total: int | None) -> None:
        if total is None or total < 0:
            return
        pct = 100 if total == 0 else min(100, done * 100 // total)
        step = 100 if pct == 100 else pct // 10 * 10
        with self._lock:
            last = self._last.get((sample, bar))
            if last is not None and step <= last:
                return
            self._last[(sample, bar)] = step
            print(f"{sample} {bar}: {done}/{total} files ({pct}%)", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        pass


class TqdmBars(_Start):
    def __init__(self) -> None:
        import warnings

        with warnings.catch_warnings():  # "notebook mode" is what we want: say nothing
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._lock = threading.Lock()
        self._bars: dict[tuple[str, str], Any] = {}

    def update(self, sample: str, bar: str, done: int, total: int | None) -> None:
        with self._lock:
            found = self._bars.get((sample, bar))
            if found is None:
                found = self._bars[(sample, bar)] = self._tqdm(
                    total=total, desc=f"{sample} {bar}", unit="file", leave=True)
            if total is not None and found.total != total:
                # reset(), not ``.total =``: the notebook widget sets its maximum there
                # (a bar made with total None is drawn as an indeterminate one).
                found.reset(total=total)
            found.n = done
            found.refresh()

    def close(self) -> None:
        with self._lock:
            for found in self._bars.values():
                found.close()
            self._bars.clear()


class RichBars(_Start):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=Console(stderr=True))
        self._lock = threading.Lock()
        self._tasks: dict[tuple[str, str], Any] = {}
        self._progress.start()

    def update(self, sample: str, bar: str, done: int, total: int | None) -> None:
        with self._lock:
            task = self._tasks.get((sample, bar))
            if task is None:
                task = self._tasks[(sample, bar)] = self._progress.add_task(
                    f"{sample} {bar}", total=total)
            self._progress.update(task, completed=done, total=total)

    def close(self) -> None:
        with self._lock:
            self._progress.stop()


def in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an odd IPython is simply "not Jupyter"
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _interactive() -> bool:
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty or in_jupyter()


_CHOICES: dict[str, tuple[type[Progress], ...]] = {
    "tqdm": (TqdmBars,), "rich": (RichBars,), "plain": (), "off": (Quiet,)}


def make_progress(enabled: bool = True) -> Progress:
    """The progress display for this environment (see the module's docstring)."""
    choice = os.environ.get("DELIVERY_PROGRESS", "auto").strip().lower() or "auto"
    if not enabled:
        return Quiet()
    if choice in _CHOICES:
        kinds = _CHOICES[choice]
    elif _interactive():
        kinds = (TqdmBars, RichBars)
    else:
        kinds = ()
    for kind in kinds:
        try:
            return kind()
        except ImportError:
            continue
    return PlainLines()

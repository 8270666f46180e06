"""Fault-injection points for the fault suite (``tests/faults/``): inert unless set.

- ``DELIVERY_TEST_PAUSE_AT=<point>:<dir>``: at ``<point>`` of each file
  (``before-upload``, ``before-report`` or ``before-ack``) the worker appends
  ``<request id> <file id>`` to ``<dir>/paused.<pid>`` and waits until
  ``<dir>/resume`` exists, so a test can kill or signal it in that exact window.
- ``DELIVERY_TEST_CRASH_ON=<text>``: the transform process of an input whose
  URL contains ``<text>`` kills itself with SIGSEGV: a poison file.

Both are read when used, cost one dictionary lookup when unset, and are never
set by the service itself. Do not set them in production.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from delivery.messages import FileTask

__all__ = ["pause", "crash", "POINTS"]

log = logging.getLogger("delivery.worker")
POINTS = ("before-upload", "before-report", "before-ack")


def pause(point: str, task: FileTask) -> None:
    setting = os.environ.get("DELIVERY_TEST_PAUSE_AT")
    if not setting or not setting.startswith(point + ":"):
        return
    folder = Path(setting.split(":", 1)[1])
    log.warning("DELIVERY_TEST_PAUSE_AT: pausing %s on file %d of %s", point, task.file_id,
                task.request_id)
    with open(folder / f"paused.{os.getpid()}", "a") as marker:
        marker.write(f"{task.request_id} {task.file_id}\n")
    while not (folder / "resume").exists():
        time.sleep(0.05)


def crash(task: FileTask) -> None:
    """Called in the transform process."""
    text = os.environ.get("DELIVERY_TEST_CRASH_ON")
    if text and any(text in url for url in task.replicas):
        os.kill(os.getpid(), signal.SIGSEGV)

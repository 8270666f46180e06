"""The client's progress bars, drawn by a real deliver() run in a terminal and in Jupyter.

The terminal is a pseudo-terminal: a child process runs ``deliver`` against the
embedded service with its stderr on the pty, and the test reads what a user would
see. Jupyter is a real IPython kernel (``jupyter_client`` + ``ipykernel``): the
test runs ``deliver`` in it and reads the widget messages the notebook would draw.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import in_ci
from stack import REPO, Stack, embedded_stack

from transformers.generate import generate

pytestmark = pytest.mark.integration

FILES = 3
CHILD = """
import sys
from delivery import Client, Query, deliver
url, progress, *files = sys.argv[1:]
spec = {"Sample": [{"Name": "zmm", "Dataset": files,
                    "Query": Query("Events").columns("MET_pt").where("MET_pt > 5")}]}
with Client(url) as client:
    got = deliver(spec, client=client, progress=progress == "on", cache=False)
print("events", len(got["zmm"]))
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("progress-inputs")
    for i in range(FILES):
        generate(root / f"nano{i}.root", 1000, seed=60 + i, basket_entries=500)
    return root


@pytest.fixture(scope="module")
def stack(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("progress-stack"), [data_dir]) as s:
        yield s


def inputs(data_dir: Path) -> list[str]:
    return [str(data_dir / f"nano{i}.root") for i in range(FILES)]


def in_terminal(stack: Stack, data_dir: Path, tmp_path: Path, progress: str,
                display: str) -> tuple[str, str]:
    """Run CHILD with stderr on a pseudo-terminal; (what the terminal showed, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DELIVERY_CACHE": str(tmp_path / "cache"),
           "DELIVERY_PROGRESS": display, "TERM": "xterm-256color", "COLUMNS": "120",
           "LINES": "40"}
    for name in ("NO_COLOR", "FORCE_COLOR", "TQDM_DISABLE", "CI"):
        env.pop(name, None)  # rich and tqdm would draw differently (or not at all)
    master, slave = pty.openpty()
    # A fresh pty is 0x0, which no real terminal is (tqdm would draw 0-wide bars).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, stack.url, progress,
                             *inputs(data_dir)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, shown.decode(errors="replace")[-2000:]
    return shown.decode(errors="replace"), out.decode()


def last_states(screen: str) -> dict[str, str]:
    """The last drawn text of each bar (tqdm redraws with \\r, rich moves the cursor)."""
    found: dict[str, str] = {}
    for piece in re.split(r"[\r\n]", ANSI.sub("", screen)):
        for bar in ("zmm transform", "zmm download"):
            if bar in piece:
                found[bar] = piece.strip()
    return found


@pytest.mark.parametrize("display", ["tqdm", "rich", "auto"])
def test_both_bars_reach_the_file_count_in_a_terminal(stack: Stack, data_dir: Path,
                                                      tmp_path: Path, display: str) -> None:
    screen, out = in_terminal(stack, data_dir, tmp_path, "on", display)
    assert out.startswith("events ")
    states = last_states(screen)
    assert sorted(states) == ["zmm download", "zmm transform"], screen
    for text in states.values():
        assert re.search(rf"\b{FILES}/{FILES}\b", text), (display, states)
    if display in ("tqdm", "auto"):  # auto in a terminal: tqdm (installed by the test extra)
        assert all("100%" in text for text in states.values()), states
        assert "files (" not in screen  # not the plain-lines fallback


def test_quiet_mode_draws_nothing_in_a_terminal(stack: Stack, data_dir: Path,
                                                tmp_path: Path) -> None:
    screen, out = in_terminal(stack, data_dir, tmp_path, "off", "auto")
    assert out.startswith("events ") and screen == ""


def test_off_in_the_environment_is_quiet(stack: Stack, data_dir: Path,
                                         tmp_path: Path) -> None:
    screen, out = in_terminal(stack, data_dir, tmp_path, "on", "off")
    assert out.startswith("events ") and screen == ""


def widget_states(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """comm id -> the latest state of each widget model the kernel opened or updated."""
    states: dict[str, dict[str, Any]] = {}
    for msg in messages:
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind in ("comm_open", "comm_msg"):
            state = content.get("data", {}).get("state")
            if state:
                states.setdefault(content["comm_id"], {}).update(state)
    return states


def test_both_bars_are_notebook_widgets_in_jupyter(stack: Stack, data_dir: Path,
                                                   tmp_path: Path) -> None:
    try:  # the test extra installs them; a laptop without them skips, CI fails
        import ipykernel  # noqa: F401
        import ipywidgets  # noqa: F401
        import jupyter_client
    except ImportError as err:
        if in_ci():
            raise
        pytest.skip(f"Jupyter kernel packages missing: {err}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DELIVERY_CACHE": str(tmp_path / "cache")}
    env.pop("DELIVERY_PROGRESS", None)
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f",
                          "{connection_file}"]
    manager.start_kernel(env=env, cwd=str(tmp_path))
    kc = manager.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        code = CHILD.replace("url, progress, *files = sys.argv[1:]",
                             f"url, progress, files = {stack.url!r}, 'on', "
                             f"{inputs(data_dir)!r}")
        messages: list[dict[str, Any]] = []
        reply = kc.execute_interactive(code, timeout=120, output_hook=messages.append)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        manager.shutdown_kernel(now=True)
    streams = "".join(m["content"].get("text", "") for m in messages
                      if m["header"]["msg_type"] == "stream")
    assert "events " in streams
    states = widget_states(messages)
    progress = [s for s in states.values() if s.get("_model_name") == "FloatProgressModel"]
    # tqdm.notebook: an HBox of (HTML description, FloatProgress bar, HTML counts) per bar
    assert len(progress) == 2, states
    assert all(s["value"] == FILES and s["max"] == FILES for s in progress), progress
    labels = " ".join(str(s.get("value", "")) for s in states.values()
                      if s.get("_model_name") == "HTMLModel").replace("\u2007", " ")
    for bar in ("zmm transform", "zmm download"):
        assert re.search(rf"{bar}: 100% +{FILES}/{FILES}\b", labels), labels

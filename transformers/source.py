"""Source layer: open an input (after the policy check), try replicas, classify failures.

Contract: :func:`open_input` returns an open uproot directory or raises a
:class:`~delivery.errors.DeliveryError`. Every low-level failure (uproot,
fsspec, XRootD, aiohttp, codecs) passes through :func:`classify`, which
decides once, for the whole engine, whether it is permanent or transient.
"""

from __future__ import annotations

import errno
import os
import re
import zlib
from collections.abc import Sequence
from typing import Any

import uproot

from delivery.errors import DeliveryError, InputError, PolicyError, TransientError
from delivery.policy import SourcePolicy, is_local

__all__ = ["open_input", "classify"]

# XRootD checks its time-outs every 15 s by default, so a 3 s time-out took 15 s.
# This must be set before the XRootD client first loads; an operator's value wins.
os.environ.setdefault("XRD_TIMEOUTRESOLUTION", "1")

_TRANSIENT_ERRNO = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                    errno.ENETUNREACH, errno.EPIPE, errno.ECONNABORTED, errno.EAGAIN}  # fmt: skip
# XRootD status codes that mean "this file will never be readable here".
_XRD_PERMANENT = re.compile(r"\[(3011|3010|3013|3016)\]|no such file|not found|permission denied",
                            re.IGNORECASE)
_NETWORK_WORDS = re.compile(
    r"timed? ?out|expired|connection (reset|refused|aborted|closed)|socket|temporarily unavailable|"
    r"server disconnected|cannot connect|broken pipe|\[FATAL\]",
    re.IGNORECASE,
)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def classify(exc: BaseException, where: str) -> DeliveryError:
    """Map any exception raised while opening or reading ``where`` onto our tree."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{where}: no such file")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{where}: is a directory, not a ROOT file")
    if isinstance(exc, PermissionError):
        return InputError(f"{where}: permission denied")
    msg = _short(exc)
    if isinstance(exc, TimeoutError | ConnectionError) or (
        isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO
    ):
        return TransientError(f"{where}: network error: {msg}")
    if type(exc).__module__.startswith(("aiohttp", "fsspec_xrootd", "XRootD")) or (
        isinstance(exc, OSError) and not isinstance(exc, zlib.error)
    ):
        status = getattr(exc, "status", None)  # aiohttp's ClientResponseError
        if isinstance(status, int) and status >= 500:
            return TransientError(f"{where}: server error {status}: {msg}")
        if isinstance(status, int) or _XRD_PERMANENT.search(msg):
            return InputError(f"{where}: {msg}")
        if _NETWORK_WORDS.search(msg) or type(exc).__module__.startswith("aiohttp"):
            return TransientError(f"{where}: network error: {msg}")
    if "not a ROOT file" in msg:
        return InputError(f"{where}: not a ROOT file")
    if isinstance(exc, MemoryError):
        return InputError(f"{where}: data needs more memory than this worker has")
    # What remains is the file's own content failing to decode: corrupt or truncated.
    return InputError(f"{where}: corrupt or unreadable data ({type(exc).__name__}: {msg})")


def _open_one(url: str, policy: SourcePolicy, timeout: float) -> Any:
    target = policy.check(url)
    options: dict[str, Any] = {}
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme == "s3":
        # s3fs takes its time-outs through botocore; credentials and endpoint come from
        # the standard AWS_* environment, so none are passed around in code.
        options["config_kwargs"] = {"connect_timeout": timeout, "read_timeout": timeout}
    else:
        options["timeout"] = max(int(timeout), 1)  # XRootD wants whole seconds
    if not is_local(url):
        # Ask uproot for fsspec explicitly so root://, http(s):// and s3:// share one path.
        options["handler"] = uproot.source.fsspec.FSSpecSource
    if is_local(url) and os.path.isfile(target) and os.path.getsize(target) == 0:
        raise InputError(f"{url}: empty file (0 bytes), not a ROOT file")
    try:
        return uproot.open(target, **options)
    except Exception as exc:
        raise classify(exc, url) from exc


def open_input(replicas: str | Sequence[str], policy: SourcePolicy,
               timeout: float = 60.0) -> tuple[str, Any]:
    """Open the first replica that answers; returns (url used, uproot directory).

    Replicas are tried in order, moving on only after a transient failure: a
    permanent one (corrupt file, policy) would be the same on every copy.
    """
    urls = [replicas] if isinstance(replicas, str) else list(replicas)
    if not urls:
        raise InputError("no input given")
    for url in urls:
        policy.check(url)  # refuse the whole list if any replica is outside policy
    last: TransientError | None = None
    for url in urls:
        try:
            return url, _open_one(url, policy, timeout)
        except TransientError as err:
            last = err
        except PolicyError:
            raise
    assert last is not None
    raise TransientError(f"all {len(urls)} replica(s) failed; last: {last.reason}")

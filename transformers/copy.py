"""Copy queries: histograms and other small objects copied into a ROOT output.

A pattern is an exact name, a glob, or ``/regex/`` (as in the selection
model). Only objects uproot can write back (histograms, TNamed, TObjString)
are copied; TTrees and RNTuples are never copied wholesale.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from delivery.errors import InputError
from transformers.source import classify

__all__ = ["copy_objects", "matches"]

_COPYABLE = ("TH1", "TH2", "TH3", "TProfile", "TNamed", "TObjString", "TGraph")


def matches(pattern: str, name: str) -> bool:
    body = pattern.rstrip("ims")
    if len(body) > 1 and body.startswith("/") and body.endswith("/"):
        flags = re.IGNORECASE if "i" in pattern[len(body):] else 0
        return re.search(body[1:-1], name, flags) is not None
    return fnmatch.fnmatchcase(name, pattern)


def copy_objects(directory: Any, pattern: str, sink: Any, where: str) -> int:
    """Copy matching objects into ``sink`` (a RootSink); returns how many were copied."""
    try:
        classes = directory.classnames()
        picked = {k.rsplit(";", 1)[0]: v for k, v in classes.items()
                  if v.startswith(_COPYABLE) and matches(pattern, k.rsplit(";", 1)[0])}
        for name in picked:
            sink.copy(name, directory[name])
    except InputError:
        raise
    except Exception as exc:
        raise classify(exc, where) from exc
    return len(picked)

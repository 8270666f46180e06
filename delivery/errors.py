"""The one exception tree of columnar-delivery.

::

    DeliveryError                 anything this project raises on purpose
    ├── PermanentError            retrying cannot help: fail the file now
    │   ├── SelectionError        the query is malformed or not allowed
    │   ├── InputError            not ROOT, corrupt, missing tree/branch, unsupported type
    │   └── PolicyError           path, scheme or host not allowed
    └── TransientError            network, broker or store trouble: retry with backoff

Every message is one line written for a physicist: it says what was wrong and,
where it helps, what exists instead. The API maps these classes to HTTP status
codes in one place; the worker maps them to "fail now" (permanent) or "put
back" (transient).
"""

from __future__ import annotations

__all__ = [
    "DeliveryError",
    "PermanentError",
    "SelectionError",
    "InputError",
    "PolicyError",
    "TransientError",
]


class DeliveryError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, reason: str) -> None:
        # Keep the reason to one line: it travels into logs, HTTP bodies and tables.
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)


class PermanentError(DeliveryError):
    """Retrying cannot help."""


class SelectionError(PermanentError):
    """The selection (query) is malformed or uses something not allowed."""

    def __init__(self, reason: str, *, field: str | None = None, position: int | None = None):
        where = []
        if field:
            where.append(field)
        if position is not None:
            where.append(f"column {position}")
        prefix = f"{': '.join(where)}: " if where else ""
        self.field = field
        self.position = position
        super().__init__(prefix + reason)


class InputError(PermanentError):
    """The input file cannot give what was asked: not ROOT, corrupt, missing tree or branch."""


class PolicyError(PermanentError):
    """The input location is outside what this deployment allows."""


class TransientError(DeliveryError):
    """A network, broker or store failure that may pass: callers retry with backoff."""

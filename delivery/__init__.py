"""columnar-delivery: ROOT files in, columns out, with queries that cannot run code.

The public API is deliberately small; everything not in ``__all__`` may change.
Errors form one tree, drawn in :mod:`delivery.errors`.
"""

from typing import TYPE_CHECKING, Any

from delivery.errors import (
    DeliveryError,
    InputError,
    PermanentError,
    PolicyError,
    SelectionError,
    TransientError,
)
from delivery.selection import Selection, parse_selection

if TYPE_CHECKING:
    from delivery.client import Client, Delivery, DeliveryFailed, Query, ServerRefused, deliver

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Delivery",
    "DeliveryError",
    "DeliveryFailed",
    "InputError",
    "PermanentError",
    "PolicyError",
    "Query",
    "Selection",
    "SelectionError",
    "ServerRefused",
    "TransientError",
    "__version__",
    "deliver",
    "parse_selection",
]

_CLIENT = ("Client", "Delivery", "DeliveryFailed", "Query", "ServerRefused", "deliver")


def __getattr__(name: str) -> Any:
    # The client (and httpx) loads on first use, so servers and workers never pay for it.
    if name in _CLIENT:
        import delivery.client

        return getattr(delivery.client, name)
    raise AttributeError(f"module 'delivery' has no attribute {name!r}")

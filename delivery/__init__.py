"""columnar-delivery: ROOT files in, columns out, with queries that cannot run code.

The public API is deliberately small; everything not in ``__all__`` may change.
Errors form one tree, drawn in :mod:`delivery.errors`.
"""

from delivery.errors import (
    DeliveryError,
    InputError,
    PermanentError,
    PolicyError,
    SelectionError,
    TransientError,
)
from delivery.selection import Selection, parse_selection

__version__ = "0.1.0"

__all__ = [
    "DeliveryError",
    "InputError",
    "PermanentError",
    "PolicyError",
    "Selection",
    "SelectionError",
    "TransientError",
    "__version__",
    "parse_selection",
]

"""The client library: submit selections, follow requests, download and load outputs.

It speaks HTTP only (the ServiceX protocol plus our native endpoints) and
never imports the server (``api``) or the workers (``transformers``).
"""

from delivery.client.client import (
    Client,
    DeliveryFailed,
    DeliveryStalled,
    FileFailure,
)
from delivery.client.deliver import Delivery, DeliveryStream, deliver
from delivery.client.http import ServerRefused
from delivery.client.query import Query
from delivery.client.transfer import TruncatedDownload, verify_size

__all__ = ["Client", "Delivery", "DeliveryFailed", "DeliveryStalled", "DeliveryStream",
           "FileFailure", "Query", "ServerRefused", "TruncatedDownload", "deliver",
           "verify_size"]

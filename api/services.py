"""The collaborators the app is built from, injected by whoever starts it.

The app factory never constructs a backend itself: ``delivery serve`` (or a
test) picks the broker, the stores and the policy, and passes them in here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from delivery.broker.base import Broker
from delivery.config import Settings
from delivery.objects.base import ObjectStore
from delivery.policy import SourcePolicy

__all__ = ["Services", "News"]


class News:
    """Wakes long-polling clients when a result is recorded in this process.

    Results recorded by another API instance are seen by the waiters' periodic
    re-check, so this is a latency shortcut, never the only path.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0

    def publish(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._version != seen, timeout=timeout)
            return self._version

    @property
    def version(self) -> int:
        return self._version


def _operations() -> Any:
    from api.operations import Operations  # prometheus_client only when a service is built

    return Operations()


@dataclass
class Services:
    settings: Settings
    store: Any  # api.store.RequestStore (typed loosely to keep this module import-light)
    broker: Broker
    objects: ObjectStore
    policy: SourcePolicy
    news: News = field(default_factory=News)
    ops: Any = field(default_factory=_operations)  # api.operations: metrics, heartbeats

"""The work queue between the API and the workers, behind one contract (:mod:`.base`).

:func:`open_broker` picks the backend from the configured URL: none gives the
embedded :class:`~delivery.broker.memory.MemoryBroker` (one process, nothing
survives it); ``amqp://`` or ``amqps://`` gives
:class:`~delivery.broker.rabbitmq.RabbitBroker` (a durable quorum queue with
dead letters). pika is imported only when RabbitMQ is asked for, so ``import
delivery`` stays light.
"""

from __future__ import annotations

from delivery.broker.base import DEFAULT_DELIVERY_LIMIT, Broker, Handler, Verdict

__all__ = ["Broker", "Handler", "Verdict", "DEFAULT_DELIVERY_LIMIT", "open_broker"]


def open_broker(
    url: str | None, queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> Broker:
    """The broker for ``url`` (``None``: embedded in this process)."""
    if url is None:
        from delivery.broker.memory import MemoryBroker

        return MemoryBroker(delivery_limit=delivery_limit)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("amqp", "amqps"):
        from delivery.broker.rabbitmq import RabbitBroker

        return RabbitBroker(url, queue=queue, delivery_limit=delivery_limit)
    # Name only the scheme: the rest of the URL may hold a password.
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r}: use amqp:// or amqps://, or no URL "
        "for the embedded broker"
    )

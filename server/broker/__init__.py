"""Relaying between instances: in-process for one instance, Redis for several."""

from __future__ import annotations

from ..config import Settings
from .base import Broker, BrokerListener, RoomMessage
from .keys import Keys

__all__ = ["Broker", "BrokerListener", "Keys", "RoomMessage", "open_broker"]


def open_broker(settings: Settings) -> Broker:
    """The broker the settings ask for: Redis when ``REDIS_URL`` is set, else in-process."""
    if settings.redis_url is None:
        return Broker()
    from .redis import RedisBroker

    return RedisBroker(
        settings.redis_url,
        prefix=settings.redis_prefix,
        instance_timeout=settings.instance_timeout,
        stream_retention=settings.stream_retention,
    )

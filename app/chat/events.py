"""In-process notifications for live clients (the websocket demo): memories committed for a user."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("memchat.events")

TenantKey = tuple[str, str]


class EventHub:
    """Publish/subscribe per (org, namespace). Slow subscribers drop events rather than block commits."""

    def __init__(self, buffer: int = 64) -> None:
        self._buffer = buffer
        self._subscribers: dict[TenantKey, set[MemoryObjectSendStream[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, org_id: str, namespace: str) -> tuple[MemoryObjectSendStream[dict[str, Any]],
                                                              MemoryObjectReceiveStream[dict[str, Any]]]:
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](self._buffer)
        self._subscribers[(org_id, namespace)].add(send)
        return send, receive

    def unsubscribe(self, org_id: str, namespace: str, send: MemoryObjectSendStream[dict[str, Any]]) -> None:
        subscribers = self._subscribers.get((org_id, namespace))
        if subscribers is not None:
            subscribers.discard(send)
            if not subscribers:
                del self._subscribers[(org_id, namespace)]
        send.close()

    def publish(self, org_id: str, namespace: str, event: dict[str, Any]) -> None:
        for send in list(self._subscribers.get((org_id, namespace), ())):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                log.warning("dropping an event for a slow subscriber")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers[(org_id, namespace)].discard(send)

"""Which namespaces have memories at all, so a chat in an empty one skips retrieval entirely.

Most conversations start in a namespace with nothing in it yet (a new user), and searching it costs a
query embedding (~12 ms of CPU with the local model) plus two LanceDB queries, only to find nothing.
``TenantPresence`` answers "may this tenant have memories?" from memory:

* "yes" is remembered until this process deletes the tenant's memories (a stale "yes" costs one search
  that finds nothing, never a wrong answer);
* "no" is remembered for ``empty_ttl`` seconds, and forgotten the moment this process writes a memory
  there. Memories written by *another* process (a second worker or replica on the same store) become
  visible to this process's chats within ``empty_ttl`` (``MEMCHAT_EMPTY_NAMESPACE_TTL``, default 2 s;
  0 asks the store every time).

Both answers live in one bounded LRU map keyed by the tenant key.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

DEFAULT_EMPTY_TTL = 2.0
DEFAULT_MAX_TENANTS = 100_000


class TenantPresence:
    def __init__(self, count: Callable[[str, str], Awaitable[int]], *, empty_ttl: float = DEFAULT_EMPTY_TTL,
                 max_tenants: int = DEFAULT_MAX_TENANTS, clock: Callable[[], float] = time.monotonic) -> None:
        self._count = count
        self.empty_ttl = empty_ttl
        self._max = max_tenants
        self._clock = clock
        # (org, namespace) -> True (has memories) | monotonic time the tenant was seen empty
        self._known: OrderedDict[tuple[str, str], bool | float] = OrderedDict()
        self.store_checks = 0

    def _put(self, key: tuple[str, str], value: bool | float) -> None:
        self._known[key] = value
        self._known.move_to_end(key)
        while len(self._known) > self._max:
            self._known.popitem(last=False)

    def known_empty(self, org_id: str, namespace: str) -> bool:
        """True while a recent "no memories" answer holds (no I/O)."""
        known = self._known.get((org_id, namespace))
        return known is not None and known is not True and self._clock() - known < self.empty_ttl

    async def may_have_memories(self, org_id: str, namespace: str) -> bool:
        key = (org_id, namespace)
        known = self._known.get(key)
        if known is True:
            return True
        if known is not None and self._clock() - known < self.empty_ttl:
            return False
        seen_at = self._clock()
        self.store_checks += 1
        present = await self._count(org_id, namespace) > 0
        if self._known.get(key) is not True:  # a write while we counted wins
            self._put(key, True if present else seen_at)
        return present

    def mark_present(self, org_id: str, namespace: str) -> None:
        self._put((org_id, namespace), True)

    def forget(self, org_id: str, namespace: str) -> None:
        self._known.pop((org_id, namespace), None)

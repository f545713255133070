"""Concurrent requests for the approvals list share listings, and no answer predates its request.

Listing approvals costs one visibility query plus one `status` query per waiting run, answered
by the workers. With 500 pending, four clients listing at once meant 2,000 concurrent queries:
some timed out and those runs dropped out of the list (measured with bench/http_api.py). Here at
most one listing runs at a time; a request waits for the listing that starts after it arrived,
which every request queued behind the running one shares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class SharedListing(Generic[T]):
    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._lock = asyncio.Lock()
        self._started = 0  # listings started so far
        self._last_index = 0  # which listing `_last` came from
        self._last: tuple[T | None, BaseException | None] = (None, None)

    async def get(self) -> T:
        arrived_after = self._started
        async with self._lock:
            if self._last_index <= arrived_after:  # nothing started since we came: list now
                self._started += 1
                index = self._started
                try:
                    self._last = (await self._fetch(), None)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the waiters behind us get the same answer
                    self._last = (None, exc)
                self._last_index = index
            value, error = self._last
        if error is not None:
            raise error
        return cast(T, value)

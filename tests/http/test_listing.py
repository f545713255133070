"""SharedListing: concurrent requests share one listing, and none gets an answer older than it."""

from __future__ import annotations

import asyncio

from tests.support import eventually
from toolwarden.http.listing import SharedListing


class Source:
    """A listing whose every fetch the test releases by hand; each answers its own number."""

    def __init__(self) -> None:
        self.fetches = 0
        self.release = asyncio.Event()
        self.failing: set[int] = set()

    async def fetch(self) -> int:
        self.fetches += 1
        number = self.fetches
        await self.release.wait()
        if number in self.failing:
            raise RuntimeError(f"listing {number} failed")
        return number


async def test_one_request_at_a_time_lists_afresh_each_time() -> None:
    source = Source()
    source.release.set()
    listing = SharedListing(source.fetch)
    assert [await listing.get() for _ in range(3)] == [1, 2, 3]


async def test_requests_during_a_listing_share_the_next_one() -> None:
    source = Source()
    listing = SharedListing(source.fetch)
    first = asyncio.create_task(listing.get())
    await eventually(lambda: source.fetches == 1)
    # These arrive while listing 1 runs: its answer may predate them, so they wait for 2.
    later = [asyncio.create_task(listing.get()) for _ in range(5)]
    await asyncio.sleep(0)
    source.release.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2] * 5
    assert source.fetches == 2


async def test_a_failure_is_shared_by_its_waiters_and_the_next_request_retries() -> None:
    source = Source()
    source.failing = {2}
    listing = SharedListing(source.fetch)
    first = asyncio.create_task(listing.get())
    await eventually(lambda: source.fetches == 1)
    waiters = [asyncio.create_task(listing.get()) for _ in range(3)]  # they share listing 2
    await asyncio.sleep(0)
    source.release.set()
    assert await first == 1
    answers = await asyncio.gather(*waiters, return_exceptions=True)
    assert [str(a) for a in answers] == ["listing 2 failed"] * 3
    assert source.fetches == 2
    assert await listing.get() == 3

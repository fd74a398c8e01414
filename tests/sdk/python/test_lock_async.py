"""The asyncio client ``dapr.aio.clients.DaprClient`` against leasehold (gRPC).

Each test runs its own event loop with ``asyncio.run`` and bounds it with
``asyncio.wait_for``, so no plugin is needed and a hung call fails the test.
"""

import asyncio

from dapr.aio.clients import DaprClient
from dapr.clients.grpc._response import UnlockResponseStatus

from sdk_support import apoll_until

LONG = 120
BOUND = 60


def run(scenario):
    async def bounded():
        async with DaprClient() as client:
            await asyncio.wait_for(scenario(client), timeout=BOUND)

    asyncio.run(bounded())


def test_async_acquire_refuse_and_unlock(plain_sidecar, store, resource):
    async def scenario(client):
        first = await client.try_lock(store, resource, "owner-1", LONG)
        assert first
        assert first.success is True
        assert not await client.try_lock(store, resource, "owner-2", LONG)
        assert not await client.try_lock(store, resource, "owner-1", LONG)
        wrong = await client.unlock(store, resource, "owner-2")
        assert wrong.status == UnlockResponseStatus.lock_belongs_to_others
        own = await client.unlock(store, resource, "owner-1")
        assert own.status == UnlockResponseStatus.success
        missing = await client.unlock(store, resource, "owner-1")
        assert missing.status == UnlockResponseStatus.lock_does_not_exist
        assert await client.try_lock(store, resource, "owner-2", LONG)

    run(scenario)


def test_async_with_statement_unlocks_on_exit(plain_sidecar, store, resource):
    async def scenario(client):
        async with await client.try_lock(store, resource, "owner-1", LONG) as lock:
            assert lock
            assert not await client.try_lock(store, resource, "owner-2", LONG)
        after = await client.unlock(store, resource, "owner-1")
        assert after.status == UnlockResponseStatus.lock_does_not_exist
        assert await client.try_lock(store, resource, "owner-2", LONG)

    run(scenario)


def test_async_expired_lock_is_acquirable_by_another_owner(plain_sidecar, store, resource):
    async def scenario(client):
        assert await client.try_lock(store, resource, "owner-1", 1)

        async def second_owner_acquires():
            return await client.try_lock(store, resource, "owner-2", LONG)

        await apoll_until(
            second_owner_acquires,
            within=15,
            what="a 1-second lock to expire and be taken by another owner",
        )
        stale = await client.unlock(store, resource, "owner-1")
        assert stale.status == UnlockResponseStatus.lock_belongs_to_others

    run(scenario)

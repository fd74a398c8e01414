"""The synchronous ``dapr.clients.DaprClient`` against leasehold (gRPC).

These mirror the Python SDK's own distributed-lock integration tests and
example, run against a leasehold sidecar instead of daprd.
"""

import pytest
from dapr.clients import DaprClient
from dapr.clients.grpc._response import UnlockResponseStatus

from sdk_support import poll_until

# Long enough that no lock in these tests expires while a test runs, however
# slow the machine.
LONG = 120


@pytest.fixture
def client(plain_sidecar):
    with DaprClient() as client:
        yield client


def test_acquire_gives_truthy_success(client, store, resource):
    response = client.try_lock(store, resource, "owner-1", LONG)
    assert response
    assert response.success is True


def test_second_owner_is_refused(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", LONG)
    refused = client.try_lock(store, resource, "owner-2", LONG)
    assert not refused
    assert refused.success is False


def test_same_owner_again_is_refused_not_reentrant(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", LONG)
    again = client.try_lock(store, resource, "owner-1", LONG)
    assert not again
    assert again.success is False


def test_unlock_own_lock_succeeds(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", LONG)
    response = client.unlock(store, resource, "owner-1")
    assert response.status == UnlockResponseStatus.success


def test_unlock_by_wrong_owner_belongs_to_others(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", LONG)
    response = client.unlock(store, resource, "owner-2")
    assert response.status == UnlockResponseStatus.lock_belongs_to_others
    # The lock is still held by its owner.
    assert not client.try_lock(store, resource, "owner-2", LONG)
    assert client.unlock(store, resource, "owner-1").status == UnlockResponseStatus.success


def test_unlock_of_missing_lock_does_not_exist(client, store, resource):
    response = client.unlock(store, resource, "owner-1")
    assert response.status == UnlockResponseStatus.lock_does_not_exist


def test_after_unlock_another_owner_acquires(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", LONG)
    assert client.unlock(store, resource, "owner-1").status == UnlockResponseStatus.success
    assert client.try_lock(store, resource, "owner-2", LONG)
    assert client.unlock(store, resource, "owner-2").status == UnlockResponseStatus.success


def test_unlock_twice_second_does_not_exist(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", LONG)
    assert client.unlock(store, resource, "owner-1").status == UnlockResponseStatus.success
    second = client.unlock(store, resource, "owner-1")
    assert second.status == UnlockResponseStatus.lock_does_not_exist


def test_with_statement_unlocks_on_exit(client, store, resource):
    with client.try_lock(store, resource, "owner-1", LONG) as lock:
        assert lock
        # Held inside the block.
        assert not client.try_lock(store, resource, "owner-2", LONG)
    # Released by the context manager: as in the SDK's example, a second
    # unlock finds nothing, and another owner can take the lock.
    assert client.unlock(store, resource, "owner-1").status == UnlockResponseStatus.lock_does_not_exist
    assert client.try_lock(store, resource, "owner-2", LONG)


def test_with_statement_refused_lock_leaves_holder_alone(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", LONG)
    with client.try_lock(store, resource, "owner-2", LONG) as lock:
        assert not lock
    # The refused context manager did not unlock anything: owner-1 still holds it.
    assert not client.try_lock(store, resource, "owner-3", LONG)
    assert client.unlock(store, resource, "owner-1").status == UnlockResponseStatus.success


def test_different_resources_are_independent(client, store, resource):
    assert client.try_lock(store, resource + "-a", "owner-1", LONG)
    assert client.try_lock(store, resource + "-b", "owner-2", LONG)


def test_expired_lock_is_acquirable_by_another_owner(client, store, resource):
    assert client.try_lock(store, resource, "owner-1", 1)
    poll_until(
        lambda: client.try_lock(store, resource, "owner-2", LONG),
        within=15,
        what="a 1-second lock to expire and be taken by another owner",
    )
    # The lock now belongs to owner-2, not to the owner whose lease ran out.
    assert client.unlock(store, resource, "owner-1").status == UnlockResponseStatus.lock_belongs_to_others
    assert client.unlock(store, resource, "owner-2").status == UnlockResponseStatus.success

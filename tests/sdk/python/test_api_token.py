"""``DAPR_API_TOKEN``: a sidecar started with a token accepts the SDK when
both sides have the same token and refuses it with UNAUTHENTICATED otherwise.

The health probe the SDK runs before its first call
(``GET /v1.0/healthz/outbound``) is exempt from the token check, as in daprd,
so a client with a wrong token is still constructed and fails on its first
lock call.
"""

import asyncio

import grpc
import pytest
from dapr.aio.clients import DaprClient as AsyncDaprClient
from dapr.clients import DaprClient
from dapr.clients.grpc._response import UnlockResponseStatus

LONG = 120


def test_matching_token_works(token_sidecar, monkeypatch, store, resource):
    monkeypatch.setenv("DAPR_API_TOKEN", token_sidecar)
    with DaprClient() as client:
        assert client.try_lock(store, resource, "owner-1", LONG)
        assert not client.try_lock(store, resource, "owner-2", LONG)
        assert client.unlock(store, resource, "owner-1").status == UnlockResponseStatus.success


def test_matching_token_works_async(token_sidecar, monkeypatch, store, resource):
    monkeypatch.setenv("DAPR_API_TOKEN", token_sidecar)

    async def scenario():
        async with AsyncDaprClient() as client:
            assert await client.try_lock(store, resource, "owner-1", LONG)
            unlocked = await client.unlock(store, resource, "owner-1")
            assert unlocked.status == UnlockResponseStatus.success

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def _assert_unauthenticated(excinfo):
    err = excinfo.value
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, f"got {err.code()}: {err.details()}"


def test_wrong_token_try_lock_is_unauthenticated(token_sidecar, monkeypatch, store, resource):
    monkeypatch.setenv("DAPR_API_TOKEN", token_sidecar + "-wrong")
    with DaprClient() as client:
        with pytest.raises(grpc.RpcError) as excinfo:
            client.try_lock(store, resource, "owner-1", LONG)
        _assert_unauthenticated(excinfo)


def test_wrong_token_unlock_is_unauthenticated(token_sidecar, monkeypatch, store, resource):
    monkeypatch.setenv("DAPR_API_TOKEN", token_sidecar + "-wrong")
    with DaprClient() as client:
        with pytest.raises(grpc.RpcError) as excinfo:
            client.unlock(store, resource, "owner-1")
        _assert_unauthenticated(excinfo)


def test_missing_token_is_unauthenticated(token_sidecar, store, resource):
    # token_sidecar leaves DAPR_API_TOKEN unset: the SDK sends no token.
    with DaprClient() as client:
        with pytest.raises(grpc.RpcError) as excinfo:
            client.try_lock(store, resource, "owner-1", LONG)
        _assert_unauthenticated(excinfo)


def test_wrong_token_is_unauthenticated_async(token_sidecar, monkeypatch, store, resource):
    monkeypatch.setenv("DAPR_API_TOKEN", token_sidecar + "-wrong")

    async def scenario():
        async with AsyncDaprClient() as client:
            await client.try_lock(store, resource, "owner-1", LONG)

    with pytest.raises(grpc.RpcError) as excinfo:
        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    _assert_unauthenticated(excinfo)


def test_refused_call_changed_nothing(token_sidecar, monkeypatch, store, resource):
    monkeypatch.setenv("DAPR_API_TOKEN", token_sidecar + "-wrong")
    with DaprClient() as client:
        with pytest.raises(grpc.RpcError):
            client.try_lock(store, resource, "intruder", LONG)
    # With the right token the resource is free: the refused call took no lock.
    monkeypatch.setenv("DAPR_API_TOKEN", token_sidecar)
    with DaprClient() as client:
        assert client.try_lock(store, resource, "owner-1", LONG)
        assert client.unlock(store, resource, "intruder").status == UnlockResponseStatus.lock_belongs_to_others

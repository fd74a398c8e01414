"""Refusals as a Python SDK user sees them: gRPC status codes and messages
as daprd sends them (the error table of the Dapr lock API).

The SDK itself refuses blank strings and non-positive expiries before
sending anything, so only refusals that reach the sidecar are checked here.
"""

import grpc
import pytest
from dapr.clients import DaprClient


@pytest.fixture
def client(plain_sidecar):
    with DaprClient() as client:
        yield client


def _refusal(call):
    with pytest.raises(grpc.RpcError) as excinfo:
        call()
    return excinfo.value.code(), excinfo.value.details()


def test_try_lock_on_unknown_store(client, resource):
    assert _refusal(lambda: client.try_lock("nosuchstore", resource, "owner-1", 10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "lock store nosuchstore not found",
    )


def test_unlock_on_unknown_store(client, resource):
    assert _refusal(lambda: client.unlock("nosuchstore", resource, "owner-1")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "lock store nosuchstore not found",
    )


def test_resource_id_with_double_bar(client, store):
    assert _refusal(lambda: client.try_lock(store, "a||b", "owner-1", 10)) == (
        grpc.StatusCode.INTERNAL,
        "failed to try acquiring lock: input key/keyPrefix 'a||b' can't contain '||'",
    )

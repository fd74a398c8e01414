"""Shared fixtures for the Dapr Python SDK compatibility suite.

The suite drives the official ``dapr`` package against running leasehold
sidecars. The SDK is configured only through its own environment variables:

* ``DAPR_RUNTIME_HOST``, ``DAPR_HTTP_PORT``, ``DAPR_GRPC_PORT``: a sidecar
  started without an API token (the SDK's ordinary settings).
* ``LEASEHOLD_SDK_TOKEN_HTTP_PORT``, ``LEASEHOLD_SDK_TOKEN_GRPC_PORT`` and
  ``LEASEHOLD_SDK_TOKEN``: a second sidecar started with ``DAPR_API_TOKEN``
  set to that token. The token tests point the SDK at it by setting
  ``DAPR_HTTP_PORT``, ``DAPR_GRPC_PORT`` and ``DAPR_API_TOKEN`` for the
  duration of one test (the SDK reads its settings on each use).
* ``LEASEHOLD_SDK_STORE``: the lock store name (default ``lockstore``).

``crates/leasehold-cli/tests/sdk.rs`` starts both sidecars and sets all of
these; to run the suite by hand, start two ``leasehold serve`` processes and
export the same variables.
"""

import os
import uuid

import pytest


def _required(name):
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(
            f"{name} is not set: run this suite through `cargo test -p leasehold-cli --test sdk`, "
            "or start leasehold sidecars and export the variables described in conftest.py",
            pytrace=False,
        )
    return value


@pytest.fixture
def store():
    """The name of the lock store the sidecars serve."""
    return os.environ.get("LEASEHOLD_SDK_STORE") or "lockstore"


@pytest.fixture
def resource(request):
    """A resource id no other test uses, so that tests never see each other's locks."""
    return f"py-{request.node.name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def plain_sidecar(monkeypatch):
    """Point the SDK at the sidecar that runs without an API token."""
    _required("DAPR_HTTP_PORT")
    _required("DAPR_GRPC_PORT")
    monkeypatch.setenv("DAPR_RUNTIME_HOST", os.environ.get("DAPR_RUNTIME_HOST") or "127.0.0.1")
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)


@pytest.fixture
def token_sidecar(monkeypatch):
    """Point the SDK at the sidecar that checks ``dapr-api-token``; returns the token.

    ``DAPR_API_TOKEN`` is left unset: each test sets the token it means to send.
    """
    http_port = _required("LEASEHOLD_SDK_TOKEN_HTTP_PORT")
    grpc_port = _required("LEASEHOLD_SDK_TOKEN_GRPC_PORT")
    token = _required("LEASEHOLD_SDK_TOKEN")
    monkeypatch.setenv("DAPR_RUNTIME_HOST", os.environ.get("DAPR_RUNTIME_HOST") or "127.0.0.1")
    monkeypatch.setenv("DAPR_HTTP_PORT", http_port)
    monkeypatch.setenv("DAPR_GRPC_PORT", grpc_port)
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    return token

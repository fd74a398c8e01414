// Shared helpers for the Dapr JavaScript SDK compatibility suite.
//
// The suite drives the official `@dapr/dapr` package against running
// leasehold sidecars. The ports come from environment variables, set by
// crates/leasehold-cli/tests/sdk.rs (or by hand, see docs/sdk-compatibility.md):
//
//   DAPR_HTTP_PORT, DAPR_GRPC_PORT                  a sidecar without an API token
//   LEASEHOLD_SDK_TOKEN_HTTP_PORT,
//   LEASEHOLD_SDK_TOKEN_GRPC_PORT, LEASEHOLD_SDK_TOKEN
//                                                   a sidecar started with DAPR_API_TOKEN
//   LEASEHOLD_SDK_STORE                             the lock store name (default lockstore)
//
// Every client is given its host, port, protocol and token explicitly.
"use strict";

const crypto = require("node:crypto");
const { setTimeout: sleep } = require("node:timers/promises");
const { DaprClient, CommunicationProtocolEnum, LogLevel } = require("@dapr/dapr");
const { LockStatus } = require("@dapr/dapr/types/lock/UnlockResponse");

const HOST = "127.0.0.1";
const STORE = process.env.LEASEHOLD_SDK_STORE || "lockstore";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run this suite through \`cargo test -p leasehold-cli --test sdk\`, ` +
        "or start leasehold sidecars and export the variables listed in tests/sdk/js/support.js",
    );
  }
  return value;
}

// Both transports the SDK offers, with the environment variable that holds
// the matching port of each sidecar.
const TRANSPORTS = [
  { name: "HTTP", protocol: CommunicationProtocolEnum.HTTP, plainPort: "DAPR_HTTP_PORT", tokenPort: "LEASEHOLD_SDK_TOKEN_HTTP_PORT" },
  { name: "gRPC", protocol: CommunicationProtocolEnum.GRPC, plainPort: "DAPR_GRPC_PORT", tokenPort: "LEASEHOLD_SDK_TOKEN_GRPC_PORT" },
];

function newClient(transport, { port, daprApiToken } = {}) {
  return new DaprClient({
    daprHost: HOST,
    daprPort: port ?? required(transport.plainPort),
    communicationProtocol: transport.protocol,
    daprApiToken,
    logger: { level: LogLevel.Error },
  });
}

function tokenSidecar(transport) {
  return { port: required(transport.tokenPort), token: required("LEASEHOLD_SDK_TOKEN") };
}

// A resource id no other test uses.
function uniqueResource(prefix) {
  return `js-${prefix}-${crypto.randomUUID()}`;
}

// Call `condition` until it resolves truthy or `withinMs` passes.
async function pollUntil(condition, withinMs, what, everyMs = 100) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await condition();
    if (value) {
      return value;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
    }
    await sleep(everyMs);
  }
}

module.exports = { HOST, STORE, TRANSPORTS, LockStatus, newClient, tokenSidecar, uniqueResource, pollUntil };

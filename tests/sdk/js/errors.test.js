// Refusals as an SDK user sees them, over HTTP and over gRPC: daprd's status,
// error code and message for each (the error table of the Dapr lock API).
// The JS SDK validates nothing itself, so every request reaches the sidecar.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { STORE, TRANSPORTS, newClient, uniqueResource } = require("./support");

const TEST = { timeout: 60_000 };
// Numeric gRPC codes, as the SDK's ConnectError carries them.
const INVALID_ARGUMENT = 3;
const INTERNAL = 13;

// What the SDK threw, in one shape for both transports. Over HTTP it throws
// Error(JSON.stringify({error, error_msg, status})) with daprd's JSON body in
// error_msg; over gRPC a ConnectError with a numeric code and the message.
function describeError(transport, err) {
  if (transport.name === "HTTP") {
    const outer = JSON.parse(err.message);
    const body = JSON.parse(outer.error_msg);
    return { status: outer.status, errorCode: body.errorCode, message: body.message };
  }
  return { code: err.code, message: err.rawMessage };
}

const CASES = [
  {
    name: "an unknown store",
    call: (client) => client.lock.lock("nosuchstore", uniqueResource("err"), "owner-1", 10),
    http: { status: 400, errorCode: "ERR_LOCK_STORE_NOT_FOUND", message: "lock store nosuchstore not found" },
    grpc: { code: INVALID_ARGUMENT, message: "lock store nosuchstore not found" },
  },
  {
    name: "an unlock on an unknown store",
    call: (client) => client.lock.unlock("nosuchstore", uniqueResource("err"), "owner-1"),
    http: { status: 400, errorCode: "ERR_LOCK_STORE_NOT_FOUND", message: "lock store nosuchstore not found" },
    grpc: { code: INVALID_ARGUMENT, message: "lock store nosuchstore not found" },
  },
  {
    name: "an expiry of 0",
    call: (client) => client.lock.lock(STORE, uniqueResource("err"), "owner-1", 0),
    http: {
      status: 400,
      errorCode: "ERR_MALFORMED_REQUEST",
      message: `ExpiryInSeconds is not positive in lock store ${STORE}`,
    },
    grpc: { code: INVALID_ARGUMENT, message: `ExpiryInSeconds is not positive in lock store ${STORE}` },
  },
  {
    name: "an empty owner",
    call: (client) => client.lock.lock(STORE, uniqueResource("err"), "", 10),
    http: { status: 400, errorCode: "ERR_MALFORMED_REQUEST", message: `LockOwner is empty in lock store ${STORE}` },
    grpc: { code: INVALID_ARGUMENT, message: `LockOwner is empty in lock store ${STORE}` },
  },
  {
    name: "an empty resource id",
    call: (client) => client.lock.unlock(STORE, "", "owner-1"),
    http: { status: 400, errorCode: "ERR_MALFORMED_REQUEST", message: `ResourceId is empty in lock store ${STORE}` },
    grpc: { code: INVALID_ARGUMENT, message: `ResourceId is empty in lock store ${STORE}` },
  },
  {
    name: "a resource id containing ||",
    call: (client) => client.lock.lock(STORE, "a||b", "owner-1", 10),
    http: {
      status: 500,
      errorCode: "ERR_TRY_LOCK",
      message: "failed to try acquiring lock: input key/keyPrefix 'a||b' can't contain '||'",
    },
    grpc: { code: INTERNAL, message: "failed to try acquiring lock: input key/keyPrefix 'a||b' can't contain '||'" },
  },
];

for (const transport of TRANSPORTS) {
  describe(`refusals over ${transport.name}`, () => {
    let client;

    before(async () => {
      client = newClient(transport);
      await client.start();
    });

    after(async () => {
      await client?.stop();
    });

    for (const c of CASES) {
      it(`${c.name} is refused as daprd refuses it`, TEST, async () => {
        const expected = transport.name === "HTTP" ? c.http : c.grpc;
        await assert.rejects(c.call(client), (err) => {
          assert.deepEqual(describeError(transport, err), expected);
          return true;
        });
      });
    }
  });
}

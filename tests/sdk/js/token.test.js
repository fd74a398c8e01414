// DAPR_API_TOKEN: a sidecar started with a token serves an SDK client that
// sends the same token, and refuses one that sends a wrong token or none.
//
// The JS SDK probes the sidecar before its first call (GET /v1.0/metadata over
// HTTP, GetMetadata over gRPC). Neither is exempt from the token check, in
// daprd as here, so a client with a bad token never gets past that probe: it
// retries for about 30 s and then rejects with DAPR_SIDECAR_COULD_NOT_BE_STARTED.
// The refusal cases therefore run concurrently.
"use strict";

const { describe, it, after } = require("node:test");
const assert = require("node:assert/strict");
const { STORE, TRANSPORTS, LockStatus, newClient, tokenSidecar, uniqueResource } = require("./support");

const LONG = 120;
// The SDK's probe gives up after about 30 s; leave room for a loaded machine.
const TEST = { timeout: 120_000 };

// Clients are stopped only once every test is done: the HTTP clients share one
// connection pool in the SDK, and stopping one client closes it for all.
const clients = [];

async function withClient(transport, options, body) {
  const client = newClient(transport, options);
  clients.push(client);
  return await body(client);
}

function refusedByProbe(err) {
  assert.match(String(err?.message), /DAPR_SIDECAR_COULD_NOT_BE_STARTED/);
  return true;
}

describe("API token", { concurrency: true }, () => {
  after(async () => {
    await Promise.all(clients.map((client) => client.stop()));
  });

  for (const transport of TRANSPORTS) {
    it(`over ${transport.name}: the matching token works`, TEST, async () => {
      const { port, token } = tokenSidecar(transport);
      const resource = uniqueResource("token-ok");
      await withClient(transport, { port, daprApiToken: token }, async (client) => {
        assert.deepEqual(await client.lock.lock(STORE, resource, "owner-1", LONG), { success: true });
        assert.deepEqual(await client.lock.lock(STORE, resource, "owner-2", LONG), { success: false });
        assert.deepEqual(await client.lock.unlock(STORE, resource, "owner-1"), { status: LockStatus.Success });
      });
    });

    for (const [label, daprApiToken] of [
      ["a wrong token", (env) => env.token + "-wrong"],
      ["no token", () => undefined],
    ]) {
      it(`over ${transport.name}: ${label} is refused and takes no lock`, TEST, async () => {
        const sidecar = tokenSidecar(transport);
        const resource = uniqueResource("token-refused");
        await withClient(transport, { port: sidecar.port, daprApiToken: daprApiToken(sidecar) }, async (client) => {
          await assert.rejects(client.lock.lock(STORE, resource, "intruder", LONG), refusedByProbe);
        });
        // The same resource is free for a client with the right token.
        await withClient(transport, { port: sidecar.port, daprApiToken: sidecar.token }, async (client) => {
          assert.deepEqual(await client.lock.lock(STORE, resource, "owner-1", LONG), { success: true });
          assert.deepEqual(await client.lock.unlock(STORE, resource, "intruder"), {
            status: LockStatus.LockBelongsToOthers,
          });
        });
      });
    }
  }
});

// The lock API through the official JavaScript SDK, over HTTP and over gRPC.
// It covers the lock cases of the SDK's own e2e suite
// (test/e2e/common/client.test.ts) and the semantics the Python suite checks.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { STORE, TRANSPORTS, LockStatus, newClient, uniqueResource, pollUntil } = require("./support");

// Long enough that no lock in these tests expires while a test runs.
const LONG = 120;
const TEST = { timeout: 60_000 };

for (const transport of TRANSPORTS) {
  describe(`lock over ${transport.name}`, () => {
    let client;

    before(async () => {
      client = newClient(transport);
      // The SDK probes the sidecar (metadata) before its first call.
      await client.start();
    });

    after(async () => {
      await client?.stop();
    });

    it("the SDK's health check and metadata see the sidecar and its lock store", TEST, async () => {
      assert.equal(await client.health.isHealthy(), true);
      const metadata = await client.metadata.get();
      const names = (metadata.components ?? []).map((c) => c.name);
      assert.ok(names.includes(STORE), `metadata lists ${JSON.stringify(names)}, not ${STORE}`);
    });

    it("acquire gives success: true", TEST, async () => {
      const resource = uniqueResource("acquire");
      assert.deepEqual(await client.lock.lock(STORE, resource, "owner-1", LONG), { success: true });
    });

    it("a second owner is refused with success: false", TEST, async () => {
      const resource = uniqueResource("second-owner");
      assert.equal((await client.lock.lock(STORE, resource, "owner-1", LONG)).success, true);
      // Strictly false, not undefined: the field must be on the wire.
      assert.deepEqual(await client.lock.lock(STORE, resource, "owner-2", LONG), { success: false });
    });

    it("the same owner again is refused (not reentrant)", TEST, async () => {
      const resource = uniqueResource("reentrant");
      assert.equal((await client.lock.lock(STORE, resource, "owner-1", LONG)).success, true);
      assert.deepEqual(await client.lock.lock(STORE, resource, "owner-1", LONG), { success: false });
    });

    it("unlocking your own lock gives Success", TEST, async () => {
      const resource = uniqueResource("unlock-own");
      assert.equal((await client.lock.lock(STORE, resource, "owner-1", LONG)).success, true);
      assert.deepEqual(await client.lock.unlock(STORE, resource, "owner-1"), { status: LockStatus.Success });
    });

    it("unlocking a missing lock gives LockDoesNotExist", TEST, async () => {
      const resource = uniqueResource("missing");
      assert.deepEqual(await client.lock.unlock(STORE, resource, "owner-1"), {
        status: LockStatus.LockDoesNotExist,
      });
    });

    it("unlocking by the wrong owner gives LockBelongsToOthers and keeps the lock", TEST, async () => {
      const resource = uniqueResource("wrong-owner");
      assert.equal((await client.lock.lock(STORE, resource, "owner-1", LONG)).success, true);
      assert.deepEqual(await client.lock.unlock(STORE, resource, "owner-2"), {
        status: LockStatus.LockBelongsToOthers,
      });
      assert.equal((await client.lock.lock(STORE, resource, "owner-2", LONG)).success, false);
      assert.equal((await client.lock.unlock(STORE, resource, "owner-1")).status, LockStatus.Success);
    });

    it("after unlock another owner acquires", TEST, async () => {
      const resource = uniqueResource("handover");
      assert.equal((await client.lock.lock(STORE, resource, "owner-1", LONG)).success, true);
      assert.equal((await client.lock.unlock(STORE, resource, "owner-1")).status, LockStatus.Success);
      assert.equal((await client.lock.lock(STORE, resource, "owner-2", LONG)).success, true);
      assert.equal((await client.lock.unlock(STORE, resource, "owner-1")).status, LockStatus.LockBelongsToOthers);
    });

    it("a lock whose lease ran out is acquirable by another owner", TEST, async () => {
      const resource = uniqueResource("expiry");
      assert.equal((await client.lock.lock(STORE, resource, "owner-1", 1)).success, true);
      await pollUntil(
        async () => (await client.lock.lock(STORE, resource, "owner-2", LONG)).success,
        15_000,
        "a 1-second lock to expire and be taken by another owner",
      );
      assert.equal((await client.lock.unlock(STORE, resource, "owner-1")).status, LockStatus.LockBelongsToOthers);
      assert.equal((await client.lock.unlock(STORE, resource, "owner-2")).status, LockStatus.Success);
    });

    // The SDK's own e2e cases.
    describe("js-sdk e2e cases", () => {
      it("lock (expiry 1000) then unlock gives Success", TEST, async () => {
        const resource = uniqueResource("e2e-lock-unlock");
        const lock = await client.lock.lock(STORE, resource, "owner1", 1000);
        assert.equal(lock.success, true);
        const unlock = await client.lock.unlock(STORE, resource, "owner1");
        assert.equal(unlock.status, LockStatus.Success);
      });

      it("unlock of an unknown lock gives LockDoesNotExist", TEST, async () => {
        const unlock = await client.lock.unlock(STORE, uniqueResource("e2e-unknown"), "owner1");
        assert.equal(unlock.status, LockStatus.LockDoesNotExist);
      });

      it("a lock held by owner1 is refused to owner2 while it lasts", TEST, async () => {
        // Upstream locks for 5 s and tries again after 2 s; here the lease is
        // long and owner2 keeps trying for 2 s, so a slow machine cannot
        // change the outcome.
        const resource = uniqueResource("e2e-held");
        assert.equal((await client.lock.lock(STORE, resource, "owner1", LONG)).success, true);
        const until = Date.now() + 2_000;
        let attempts = 0;
        do {
          const second = await client.lock.lock(STORE, resource, "owner2", LONG);
          assert.equal(second.success, false);
          attempts += 1;
        } while (Date.now() < until);
        assert.ok(attempts >= 1);
      });

      it("locks on two different resources both succeed", TEST, async () => {
        const a = await client.lock.lock(STORE, uniqueResource("e2e-a"), "owner1", 1000);
        const b = await client.lock.lock(STORE, uniqueResource("e2e-b"), "owner2", 1000);
        assert.equal(a.success, true);
        assert.equal(b.success, true);
      });

      it("an unlock by a different owner gives LockBelongsToOthers", TEST, async () => {
        const resource = uniqueResource("e2e-other");
        assert.equal((await client.lock.lock(STORE, resource, "owner1", 1000)).success, true);
        const unlock = await client.lock.unlock(STORE, resource, "owner2");
        assert.equal(unlock.status, LockStatus.LockBelongsToOthers);
      });
    });
  });
}

// Two unmodified matrix-js-sdk clients talk through one native Hearth node:
// register with m.login.dummy, create a room, invite, join, and see each
// other's messages arrive through /sync.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as sdk from 'matrix-js-sdk';
import { startHearth, waitFor } from '../testlib/hearth.mjs';
import { sdkLog, clientLogger, register } from '../testlib/sdk.mjs';

/** A started client whose first sync has completed. */
async function startedClient(baseUrl, creds, tag) {
  const client = sdk.createClient({
    baseUrl,
    userId: creds.user_id,
    accessToken: creds.access_token,
    deviceId: creds.device_id,
    logger: clientLogger(tag),
  });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === 'PREPARED' || state === 'SYNCING') resolve();
      if (state === 'ERROR') reject(new Error(`${tag}: sync failed: ${data?.error?.message ?? 'unknown error'}`));
    });
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  return client;
}

/** The timeline event with this ID in the client's view of the room. */
function seen(client, roomId, eventId) {
  return client.getRoom(roomId)?.getLiveTimeline().getEvents().find((e) => e.getId() === eventId);
}

test('two matrix-js-sdk clients chat through one native node', { timeout: 90_000 }, async (t) => {
  const node = await startHearth(t);
  const clients = [];
  try {
    // The API must be there before the SDK is pointed at it.
    const versions = await fetch(`${node.url}/_matrix/client/versions`);
    assert.equal(versions.status, 200, 'GET /_matrix/client/versions');
    assert.ok(Array.isArray((await versions.json()).versions), '/versions lists versions');

    const aliceCreds = await register(node.url, 'alice');
    const bobCreds = await register(node.url, 'bob');
    assert.match(aliceCreds.user_id, /^@alice:/);
    assert.notEqual(aliceCreds.access_token, bobCreds.access_token);

    const alice = await startedClient(node.url, aliceCreds, 'alice');
    clients.push(alice);
    const bob = await startedClient(node.url, bobCreds, 'bob');
    clients.push(bob);

    const { room_id: roomId } = await alice.createRoom({ name: 'Two clients', invite: [bobCreds.user_id] });
    assert.ok(roomId, 'createRoom returns a room ID');

    // Bob learns of the invite through his own /sync, then joins.
    await waitFor('bob to see the invite', () => bob.getRoom(roomId)?.getMyMembership() === 'invite');
    await bob.joinRoom(roomId);
    await waitFor('alice to see bob join', () => alice.getRoom(roomId)?.getMember(bobCreds.user_id)?.membership === 'join');

    const fromAlice = await alice.sendTextMessage(roomId, 'hello from alice');
    const gotByBob = await waitFor('bob to receive alice’s message', () => seen(bob, roomId, fromAlice.event_id));
    assert.equal(gotByBob.getSender(), aliceCreds.user_id);
    assert.equal(gotByBob.getContent().body, 'hello from alice');

    const fromBob = await bob.sendTextMessage(roomId, 'hi alice, bob here');
    const gotByAlice = await waitFor('alice to receive bob’s message', () => seen(alice, roomId, fromBob.event_id));
    assert.equal(gotByAlice.getSender(), bobCreds.user_id);
    assert.equal(gotByAlice.getContent().body, 'hi alice, bob here');

    // Each side also has its own message exactly once (no local echo left
    // pending, no duplicate from /sync).
    for (const [c, id] of [[alice, fromAlice.event_id], [bob, fromBob.event_id]]) {
      const n = c.getRoom(roomId).getLiveTimeline().getEvents().filter((e) => e.getId() === id).length;
      assert.equal(n, 1, `own message ${id} appears once`);
    }
  } catch (e) {
    console.error(`--- matrix-js-sdk warnings and errors ---\n${sdkLog.join('\n')}`);
    console.error(`--- hearth log ---\n${node.log()}--- end of hearth log ---`);
    throw e;
  } finally {
    // Stop the clients before the node (t.after) so they do not log
    // connection errors while it shuts down.
    clients.forEach((c) => c.stopClient());
  }
});

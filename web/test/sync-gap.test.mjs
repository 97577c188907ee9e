// A matrix-js-sdk client goes offline while another user sends 500
// messages and changes the room's state, then comes back: its incremental
// /sync must say the timeline is limited, bring the room's state as it is
// now, and back-pagination from prev_batch (/messages) must fill the gap
// with every missed message exactly once, in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as sdk from 'matrix-js-sdk';
import { startHearth, waitFor } from '../testlib/hearth.mjs';
import { sdkLog, clientLogger, register } from '../testlib/sdk.mjs';

const GAP = 500;

/**
 * The SDK's in-memory store, except that it reports its sync token as
 * "saved", as a persistent store (IndexedDB) does after a reload. With the
 * plain MemoryStore a restarted client forgets its token and does a fresh
 * initial sync; with this one it resumes with an incremental /sync?since=,
 * which is what this test is about.
 */
class ResumableMemoryStore extends sdk.MemoryStore {
  getSavedSyncToken() {
    return Promise.resolve(this.getSyncToken());
  }
}

/** A client that never syncs: used only to make requests. */
function plainClient(baseUrl, creds) {
  return sdk.createClient({
    baseUrl,
    userId: creds.user_id,
    accessToken: creds.access_token,
    deviceId: creds.device_id,
    logger: clientLogger(creds.user_id),
  });
}

/** Resolves on the next PREPARED/SYNCING of `client`, rejects on ERROR. */
function nextSync(client, tag) {
  return new Promise((resolve, reject) => {
    const on = (state, _prev, data) => {
      if (state === 'PREPARED' || state === 'SYNCING') {
        client.off(sdk.ClientEvent.Sync, on);
        resolve();
      }
      if (state === 'ERROR') {
        client.off(sdk.ClientEvent.Sync, on);
        reject(new Error(`${tag}: sync failed: ${data?.error?.message ?? 'unknown error'}`));
      }
    };
    client.on(sdk.ClientEvent.Sync, on);
  });
}

const enc = encodeURIComponent;

test('a client that was offline during 500 messages and state changes catches up exactly', { timeout: 120_000 }, async (t) => {
  const node = await startHearth(t);
  let offline;
  try {
    const [aliceCreds, bobCreds, carolCreds, daveCreds] = await Promise.all(
      ['alice', 'bob', 'carol', 'dave'].map((n) => register(node.url, n)),
    );
    const alice = plainClient(node.url, aliceCreds); // client B: the sender
    const carol = plainClient(node.url, carolCreds); // joins during the gap
    const dave = plainClient(node.url, daveCreds); // leaves during the gap

    const { room_id: roomId } = await alice.createRoom({
      name: 'Before the gap',
      topic: 'old topic',
      preset: 'public_chat',
    });
    for (const c of [plainClient(node.url, bobCreds), dave]) {
      await c.http.authedRequest(sdk.Method.Post, `/join/${enc(roomId)}`, undefined, {});
    }

    // Client A (bob) records every /sync request and response it makes, so
    // the test can check what the server said, not only what the SDK made
    // of it.
    const syncs = [];
    const fetchFn = async (url, init) => {
      const res = await fetch(url, init);
      const u = new URL(url);
      if (u.pathname.endsWith('/sync') && res.ok) {
        syncs.push({ since: u.searchParams.get('since'), body: await res.clone().json() });
      }
      return res;
    };
    offline = sdk.createClient({
      baseUrl: node.url,
      userId: bobCreds.user_id,
      accessToken: bobCreds.access_token,
      deviceId: bobCreds.device_id,
      store: new ResumableMemoryStore(),
      fetchFn,
      logger: clientLogger('bob'),
    });
    const bob = offline;
    let synced = nextSync(bob, 'bob');
    await bob.startClient({ initialSyncLimit: 20 });
    await synced;

    const before = [];
    for (let i = 0; i < 3; i++) {
      before.push((await alice.sendTextMessage(roomId, `before ${i}`)).event_id);
    }
    const seenLast = () => bob.getRoom(roomId)?.getLiveTimeline().getEvents().at(-1)?.getId();
    await waitFor('bob to see the messages before the gap', () => seenLast() === before.at(-1));
    assert.equal(bob.getRoom(roomId).getMember(daveCreds.user_id)?.membership, 'join', 'dave joined before the gap');

    // A goes offline. Wait until its sync loop has stopped so nothing
    // sent below reaches it before it comes back.
    const stopped = new Promise((r) => bob.on(sdk.ClientEvent.Sync, (s) => s === 'STOPPED' && r()));
    bob.stopClient();
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 5_000))]);
    const tokenBefore = bob.store.getSyncToken();
    assert.ok(tokenBefore, 'bob has a sync token when going offline');
    const syncsBefore = syncs.length;

    // B sends 500 messages; the state changes fall inside the gap, none in
    // the last 20 events, so the returned timeline window cannot carry them.
    const gap = [];
    const stateAt = {
      100: () => alice.setRoomName(roomId, 'After the gap'),
      250: () => alice.setRoomTopic(roomId, 'new topic'),
      300: () => carol.http.authedRequest(sdk.Method.Post, `/join/${enc(roomId)}`, undefined, {}),
      400: () => dave.leave(roomId),
    };
    for (let i = 0; i < GAP; i++) {
      if (stateAt[i]) await stateAt[i]();
      const txn = `gap-${i}`;
      const res = await alice.http.authedRequest(
        sdk.Method.Put,
        `/rooms/${enc(roomId)}/send/m.room.message/${txn}`,
        undefined,
        { msgtype: 'm.text', body: `gap ${i}` },
      );
      gap.push(res.event_id);
    }
    assert.equal(new Set(gap).size, GAP, 'every send got its own event ID');

    // A comes back, resuming from its stored token.
    synced = nextSync(bob, 'bob');
    await bob.startClient({ initialSyncLimit: 20 });
    await synced;
    await waitFor('bob to see the last message of the gap', () => seenLast() === gap.at(-1), { timeoutMs: 20_000 });

    const after = syncs.slice(syncsBefore);
    assert.equal(after[0]?.since, tokenBefore, 'bob resumed with an incremental sync from his old token');
    const resumed = after.find((s) => s.body.rooms?.join?.[roomId]);
    assert.ok(resumed, 'a /sync after coming back carries the room');
    const tl = resumed.body.rooms.join[roomId].timeline;
    assert.equal(tl.limited, true, 'the timeline after the gap is limited');
    assert.ok(tl.prev_batch, 'the limited timeline has a prev_batch');
    assert.ok(tl.events.length > 0 && tl.events.length <= 20, `timeline holds at most the filter limit (got ${tl.events.length})`);
    assert.equal(tl.events.at(-1).event_id, gap.at(-1), 'the timeline ends with the newest message');
    // `state` is the state at the start of the timeline: the changes made
    // before the window are there, as they are now.
    const st = resumed.body.rooms.join[roomId].state?.events ?? [];
    const stEvent = (type, key = '') => st.find((e) => e.type === type && e.state_key === key);
    assert.equal(stEvent('m.room.name')?.content.name, 'After the gap', 'state carries the new name');
    assert.equal(stEvent('m.room.topic')?.content.topic, 'new topic', 'state carries the new topic');
    assert.equal(stEvent('m.room.member', carolCreds.user_id)?.content.membership, 'join', 'state carries carol’s join');
    assert.equal(stEvent('m.room.member', daveCreds.user_id)?.content.membership, 'leave', 'state carries dave’s leave');
    const tlIds = new Set(tl.events.map((e) => e.event_id));
    assert.ok(st.every((e) => !tlIds.has(e.event_id)), 'no state event is repeated in the timeline');

    // The room's state is as B left it.
    const room = bob.getRoom(roomId);
    assert.equal(room.name, 'After the gap', 'room name');
    assert.equal(room.currentState.getStateEvents('m.room.topic', '')?.getContent().topic, 'new topic', 'room topic');
    const membership = (u) => room.getMember(u)?.membership;
    assert.equal(membership(carolCreds.user_id), 'join', 'carol joined during the gap');
    assert.equal(membership(daveCreds.user_id), 'leave', 'dave left during the gap');
    assert.equal(membership(aliceCreds.user_id), 'join', 'alice is still joined');
    assert.equal(membership(bobCreds.user_id), 'join', 'bob is still joined');

    // Back-paginate from prev_batch until the messages before the gap are
    // back in the live timeline (or the room's start is reached).
    const live = room.getLiveTimeline();
    const bodies = () => live.getEvents().filter((e) => e.getType() === 'm.room.message').map((e) => e.getContent().body);
    assert.ok(!bodies().includes('gap 0'), 'before paginating, the gap is not filled (the SDK reset its timeline)');
    assert.equal(live.getPaginationToken(sdk.EventTimeline.BACKWARDS), tl.prev_batch, 'pagination starts at prev_batch');
    for (let pages = 0; pages < 40 && !bodies().includes('before 0'); pages++) {
      const more = await bob.paginateEventTimeline(live, { backwards: true, limit: 50 });
      if (!more) break;
    }
    const got = bodies();
    const gapBodies = got.filter((b) => b.startsWith('gap '));
    const want = Array.from({ length: GAP }, (_, i) => `gap ${i}`);
    assert.equal(gapBodies.length, GAP, `all ${GAP} messages are in the timeline, exactly once`);
    assert.deepEqual(gapBodies, want, 'the gap is filled in order');
    assert.deepEqual(got.filter((b) => b.startsWith('before ')), ['before 0', 'before 1', 'before 2'],
      'pagination reached the messages before the gap, each once');
    const ids = live.getEvents().map((e) => e.getId());
    assert.equal(new Set(ids).size, ids.length, 'no event appears twice in the timeline');
    assert.deepEqual(live.getEvents().filter((e) => gap.includes(e.getId())).map((e) => e.getId()), gap,
      'gap events have the IDs the server returned on send');

    // The state changes made inside the gap show up in the paginated
    // timeline where they happened.
    const idx = (pred) => live.getEvents().findIndex(pred);
    const bodyIdx = (b) => idx((e) => e.getContent().body === b);
    const nameIdx = idx((e) => e.getType() === 'm.room.name' && e.getContent().name === 'After the gap');
    assert.ok(bodyIdx('gap 99') < nameIdx && nameIdx < bodyIdx('gap 100'), 'the rename sits between gap 99 and gap 100');
    const leaveIdx = idx((e) => e.getType() === 'm.room.member' && e.getStateKey() === daveCreds.user_id && e.getContent().membership === 'leave');
    assert.ok(bodyIdx('gap 399') < leaveIdx && leaveIdx < bodyIdx('gap 400'), 'dave’s leave sits between gap 399 and gap 400');
  } catch (e) {
    console.error(`--- matrix-js-sdk warnings and errors ---\n${sdkLog.join('\n')}`);
    console.error(`--- hearth log ---\n${node.log()}--- end of hearth log ---`);
    throw e;
  } finally {
    offline?.stopClient();
  }
});

// clients/js against the built Worker under `wrangler dev`: chat, refusals, idempotent resends,
// reconnects under traffic and sockets dropped between a send and its echo.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Clubhouse, FAST, WebSocketImpl, allMessages, expiredBadge, joined, newClient, nextEvent,
  slowMessagesWebSocket, start, uniqueName, until,
} from './helpers.mjs';

let server;
before(async () => {
  server = await start();
});
after(async () => {
  await server?.stop();
  server?.cleanup();
});

describe('clients/js', () => {
  test('connects with the badge as a subprotocol, chats, and gets typed frames', async () => {
    const [alice, bob] = [await newClient(server, 'alice'), await newClient(server, 'bob')];
    const room = uniqueName('room');
    const ra = await joined(alice, room);
    const presence = nextEvent(ra, 'join');
    const rb = bob.connect(room, FAST);
    const [history] = await Promise.all([nextEvent(rb, 'history'), nextEvent(rb, 'open')]);
    assert.equal(history.resumed, false);
    assert.deepEqual(history.messages, []);
    assert.equal((await presence).username, bob.username);

    const seen = [];
    rb.on('message', (m) => seen.push(m));
    const echo = await ra.send('hello <b>bob</b>');
    assert.equal(echo.type, 'message');
    assert.equal(echo.username, alice.username);
    assert.equal(echo.content, 'hello <b>bob</b>');
    assert.match(echo.client_id, /.+/);
    await until(() => seen.length === 1, 'bob gets the message');
    assert.equal(seen[0].id, echo.id);

    const edited = nextEvent(rb, 'edited');
    ra.edit(echo.id, 'hello bob');
    assert.equal((await edited).content, 'hello bob');
    const reacted = nextEvent(ra, 'reactions');
    rb.react(echo.id, '👍');
    assert.deepEqual((await reacted).reactions, { '👍': [bob.username] });
    const typing = nextEvent(ra, 'typing');
    rb.typing();
    assert.equal((await typing).username, bob.username);

    // An error frame about a change is an `error` event; a refused send rejects.
    const error = nextEvent(rb, 'error');
    rb.edit(echo.id, 'not mine');
    assert.equal((await error).detail, 'not your message');
    await assert.rejects(rb.send('   '), /empty/);
    await assert.rejects(rb.send('x'.repeat(4001)), /too long/);
    ra.close();
    rb.close();
    assert.equal(ra.state, 'closed');
  });

  test('an expired badge closes the room with 401, or is replaced by refreshToken', async () => {
    const alice = await newClient(server, 'alice');
    const good = alice.token;
    alice.token = expiredBadge(alice.username);
    const room = uniqueName('room');
    const r = alice.connect(room, FAST);
    const pending = r.send('never stored');
    const closed = await nextEvent(r, 'close');
    assert.equal(closed.error.status, 401);
    assert.equal(r.state, 'closed');
    await assert.rejects(pending, (e) => e.status === 401);

    alice.token = expiredBadge(alice.username);
    let refreshed = 0;
    const again = alice.connect(room, {
      ...FAST,
      refreshToken: () => {
        refreshed += 1;
        return good;
      },
    });
    const echo = await again.send('after a refresh');
    assert.equal(echo.content, 'after a refresh');
    assert.equal(refreshed, 1);
    again.close();
  });

  test('a private room refuses a non-member with 403, for good', async () => {
    const [owner, other] = [await newClient(server, 'owner'), await newClient(server, 'other')];
    const room = uniqueName('priv');
    const created = await owner.fetch(`${server.baseUrl}/rooms`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${owner.token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ room_id: room }),
    });
    assert.equal(created.status, 201);
    const r = other.connect(room, FAST);
    const reconnects = [];
    r.on('reconnecting', (e) => reconnects.push(e));
    const closed = await nextEvent(r, 'close');
    assert.equal(closed.error.status, 403);
    assert.equal(reconnects.length, 0, 'a refusal is not retried');
    const mine = await joined(owner, room);
    assert.equal((await mine.send('members only')).content, 'members only');
    mine.close();
  });

  test('batch: true gets a burst in batch frames and hands out every message once, in order', async () => {
    // Counts what the server really sent this client: the batch frames and the messages in them.
    const raw = { batches: 0, inBatches: 0 };
    class Counting extends WebSocketImpl {
      constructor(...args) {
        super(...args);
        this.addEventListener('message', (event) => {
          const frame = JSON.parse(String(event.data));
          if (frame.type !== 'batch') return;
          raw.batches += 1;
          raw.inBatches += frame.frames.filter((f) => f.type === 'message').length;
        });
      }
    }
    const alice = await newClient(server, 'alice');
    const bob = await newClient(server, 'bob', { WebSocket: Counting });
    const room = uniqueName('room');
    const rb = await joined(bob, room, { batch: true });
    const seen = [];
    rb.on('message', (m) => seen.push(m.id));
    // The library sends one message at a time; a burst needs frames sent without waiting.
    const sender = new WebSocketImpl(`${server.baseUrl.replace(/^http/, 'ws')}/ws/${room}`, ['bearer', alice.token]);
    await new Promise((resolve, reject) => {
      sender.addEventListener('message', resolve, { once: true });
      sender.addEventListener('error', reject, { once: true });
    });
    const burst = 60;
    for (let i = 0; i < burst; i++) sender.send(JSON.stringify({ content: `burst ${i}`, room_id: room }));
    await until(() => seen.length >= burst, 'bob gets the whole burst');
    const stored = (await allMessages(alice, room)).map((m) => m.id);
    assert.equal(stored.length, burst);
    assert.deepEqual(seen, stored, 'every message once, in id order');
    assert.ok(raw.batches > 0, 'the server sent batch frames');
    assert.ok(raw.inBatches > 0 && raw.inBatches <= burst);
    sender.close();
    rb.close();
  });

  test('a resend with the same client_id resolves with the original message, stored once', async () => {
    const [alice, bob] = [await newClient(server, 'alice'), await newClient(server, 'bob')];
    const room = uniqueName('room');
    const ra = await joined(alice, room);
    const first = await ra.send('only once', { clientId: 'fixed-id-1' });
    ra.close();
    const ra2 = await joined(alice, room);
    const second = await ra2.send('only once', { clientId: 'fixed-id-1' });
    assert.equal(second.id, first.id);
    assert.equal(second.ts, first.ts);
    const rb = await joined(bob, room);
    const other = await rb.send('only once', { clientId: 'fixed-id-1' });
    assert.notEqual(other.id, first.id, "another user's client_id is another message");
    const stored = await allMessages(alice, room);
    assert.deepEqual(stored.map((m) => m.content), ['only once', 'only once']);
    ra2.close();
    rb.close();
  });

  test('sockets dropped between a send and its echo: every message stored and delivered exactly once', async () => {
    const [alice, bob] = [await newClient(server, 'alice'), await newClient(server, 'bob')];
    const room = uniqueName('drop');
    let drops = 0;
    const sentTimes = new Map();
    /** Drops the connection just after a message frame goes out, every other time or so. */
    class DroppingWebSocket extends WebSocketImpl {
      send(data) {
        const clientId = JSON.parse(data).client_id;
        if (clientId) sentTimes.set(clientId, (sentTimes.get(clientId) ?? 0) + 1);
        super.send(data);
        if (data.includes('"client_id"') && Math.random() < 0.5) {
          drops += 1;
          setTimeout(() => this.terminate(), Math.floor(Math.random() * 3));
        }
      }
    }
    const flaky = new Clubhouse({ baseUrl: server.baseUrl, token: alice.token, WebSocket: DroppingWebSocket });
    const rb = await joined(bob, room);
    const received = [];
    rb.on('message', (m) => received.push(m));
    const ra = flaky.connect(room, FAST);
    const COUNT = 60;
    const echoes = await Promise.all(Array.from({ length: COUNT }, (_, i) => ra.send(`m${i}`)));
    assert.ok(drops >= 10, `the socket was dropped ${drops} times`);
    const resent = [...sentTimes.values()].filter((n) => n > 1).length;
    assert.ok(resent >= 5, `${resent} messages went out more than once`);
    assert.equal(new Set(echoes.map((e) => e.id)).size, COUNT, 'one id per message');
    await until(() => received.length >= COUNT, 'bob gets every message');
    await new Promise((r) => setTimeout(r, 300));
    const contents = received.map((m) => m.content).sort();
    assert.deepEqual(contents, Array.from({ length: COUNT }, (_, i) => `m${i}`).sort(), 'each once for bob');
    const stored = await allMessages(bob, room);
    assert.equal(stored.length, COUNT, 'each stored once');
    assert.deepEqual(stored.map((m) => m.content), echoes.slice().sort((a, b) => a.id - b.id).map((e) => e.content));
    ra.close();
    rb.close();
  });

  test('refused edits and reads while a message is in flight are error events; the message is delivered', async () => {
    const [alice, bob] = [await newClient(server, 'alice'), await newClient(server, 'bob')];
    const room = uniqueName('room');
    const rb = await joined(bob, room);
    const bobs = await rb.send('bob speaks');
    const slow = new Clubhouse({ baseUrl: server.baseUrl, token: alice.token, WebSocket: slowMessagesWebSocket(300) });
    const ra = await joined(slow, room);
    const errors = [];
    let settled = false;
    const beforeEcho = [];
    ra.on('error', (e) => {
      errors.push(e);
      if (!settled) beforeEcho.push(e.detail);
    });
    // The message is in flight (its frame held on the way) while the server refuses the read
    // (past the newest message) and the edit (not hers).
    const sent = ra.send('alice speaks').finally(() => {
      settled = true;
    });
    assert.equal(ra.read(bobs.id + 1000), true);
    assert.equal(ra.edit(bobs.id, 'not mine'), true);
    await until(() => errors.length === 2, 'both refusals as error events');
    const echo = await sent;
    assert.equal(echo.content, 'alice speaks');
    assert.equal(echo.username, alice.username);
    // Each names the change it refused, by a client_id of its own (none of them the message's).
    assert.deepEqual(errors.map(({ client_id: _, ...error }) => error), [
      { type: 'error', detail: 'no message with that id in this room yet', change: { type: 'read', id: bobs.id + 1000 } },
      { type: 'error', detail: 'not your message', change: { type: 'edit', id: bobs.id, content: 'not mine' } },
    ]);
    const ids = errors.map((e) => e.client_id);
    assert.ok(ids.every((id) => typeof id === 'string') && ids[0] !== ids[1], JSON.stringify(ids));
    assert.ok(!ids.includes(echo.client_id), JSON.stringify({ ids, echo }));
    assert.equal(beforeEcho.length, 2, 'both refusals came while the message was in flight');
    const stored = await allMessages(bob, room);
    assert.deepEqual(stored.map((m) => m.content), ['bob speaks', 'alice speaks']);
    ra.close();
    rb.close();
  });

  test("two edits out at once: the error event's change names the refused one, and the other lands", async () => {
    const [alice, bob] = [await newClient(server, 'alice'), await newClient(server, 'bob')];
    const room = uniqueName('room');
    const [ra, rb] = [await joined(alice, room), await joined(bob, room)];
    const bobs = await rb.send('bob speaks');
    const alices = await ra.send('alice speaks');
    const errors = [];
    const edits = [];
    ra.on('error', (e) => errors.push(e));
    ra.on('edited', (e) => edits.push(e));
    // The refused edit goes first: "the last change sent" would name the wrong one.
    assert.equal(ra.edit(bobs.id, 'not mine'), true);
    assert.equal(ra.edit(alices.id, 'alice fixed'), true);
    await until(() => errors.length === 1 && edits.length === 1, 'one refusal and one edit');
    assert.equal(errors[0].detail, 'not your message');
    assert.deepEqual(errors[0].change, { type: 'edit', id: bobs.id, content: 'not mine' });
    assert.equal(typeof errors[0].client_id, 'string');
    assert.equal(edits[0].id, alices.id);
    assert.equal(edits[0].content, 'alice fixed');
    assert.equal(edits[0].client_id, undefined, 'a change is broadcast without its client_id');
    const stored = await allMessages(bob, room);
    assert.deepEqual(stored.map((m) => m.content), ['bob speaks', 'alice fixed']);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(errors.length, 1);
    ra.close();
    rb.close();
  });

  test("a send's own refusal names its client_id and rejects it; the next send goes out", async () => {
    const alice = await newClient(server, 'alice');
    const room = uniqueName('room');
    const ra = await joined(alice, room);
    const errors = [];
    ra.on('error', (e) => errors.push(e));
    const first = await ra.send('to be deleted', { clientId: 'gone-1' });
    const deleted = nextEvent(ra, 'deleted');
    assert.equal(ra.delete(first.id), true);
    assert.equal((await deleted).id, first.id);
    // The server remembers the client_id of a deleted message: a resend of it is refused.
    const gone = await ra.send('to be deleted', { clientId: 'gone-1' }).then(() => null, (e) => e);
    assert.equal(gone?.name, 'ClubhouseError', String(gone));
    assert.deepEqual(gone.frame, {
      type: 'error', detail: 'the message with this client_id was deleted', client_id: 'gone-1',
    });
    // Invisible content passes the library's own check; the server refuses it, naming the send.
    const blank = await ra.send('\u200b', { clientId: 'blank-1' }).then(() => null, (e) => e);
    assert.deepEqual(blank?.frame, { type: 'error', detail: 'content must not be empty', client_id: 'blank-1' });
    assert.deepEqual(errors.map((e) => e.client_id), ['gone-1', 'blank-1']);
    assert.equal((await ra.send('after the refusals')).content, 'after the refusals');
    ra.close();
  });

  test('a connection that goes silent is given up after a missed heartbeat and replaced', async () => {
    const alice = await newClient(server, 'alice');
    let sockets = 0;
    /** The first socket stops hearing anything once open: a connection that died silently. */
    class DeafAfterOpen extends WebSocketImpl {
      constructor(...args) {
        super(...args);
        this.deaf = sockets++ === 0;
      }
      set onmessage(listener) {
        let heard = 0;
        super.onmessage = (event) => {
          heard += 1;
          if (!this.deaf || heard <= 2) listener(event); // history and presence, then nothing
        };
      }
    }
    const club = new Clubhouse({ baseUrl: server.baseUrl, token: alice.token, WebSocket: DeafAfterOpen });
    const room = uniqueName('deaf');
    const r = club.connect(room, { ...FAST, heartbeatMs: 200, heartbeatTimeoutMs: 300 });
    await nextEvent(r, 'open');
    const dropped = await nextEvent(r, 'reconnecting');
    assert.equal(dropped.code, 4000);
    assert.equal((await nextEvent(r, 'open')).resumed, true);
    assert.equal(sockets, 2);
    assert.equal((await r.send('heard again')).content, 'heard again');
    r.close();
  });

  test('a server restart under traffic: nothing lost, nothing twice, with exact catch-up', async () => {
    const [alice, bob] = [await newClient(server, 'alice'), await newClient(server, 'bob')];
    const room = uniqueName('restart');
    const ra = await joined(alice, room);
    const rb = await joined(bob, room);
    const received = new Map();
    rb.on('message', (m) => received.set(m.id, (received.get(m.id) ?? 0) + 1));
    const resumed = [];
    rb.on('history', (h) => resumed.push(h.resumed));

    await ra.send('before the restart');
    const sends = [];
    let stop = false;
    const traffic = (async () => {
      for (let i = 0; !stop; i++) {
        sends.push(ra.send(`t${i}`));
        await new Promise((r) => setTimeout(r, 40));
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    await server.restart();
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await traffic;
    const echoes = await Promise.all(sends);
    await until(() => echoes.every((e) => received.has(e.id)), 'bob gets every message');
    await new Promise((r) => setTimeout(r, 300));
    for (const [id, count] of received) assert.equal(count, 1, `message ${id} delivered once`);
    const stored = await allMessages(bob, room);
    assert.equal(stored.length, echoes.length + 1, 'each stored once');
    assert.deepEqual([...received.keys()].sort((a, b) => a - b), stored.map((m) => m.id));
    assert.ok(resumed.includes(true), 'bob resumed after the restart');
    assert.ok(rb.lastRev >= Math.max(...echoes.map((e) => e.rev)));
    ra.close();
    rb.close();
  });

  test('a kick ends the room at its closing frame; a ban is a refusal for good', async () => {
    const [owner, user] = [await newClient(server, 'owner'), await newClient(server, 'user')];
    const room = uniqueName('mod');
    const api = (method, path, body) =>
      fetch(`${server.baseUrl}${path}`, {
        method,
        headers: { Authorization: `Bearer ${owner.token}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    assert.equal((await api('POST', '/rooms', { room_id: room, private: false })).status, 201);

    const first = await joined(user, room);
    const closing = nextEvent(first, 'closing');
    const closed = nextEvent(first, 'close');
    assert.equal((await api('POST', `/rooms/${room}/kick/${user.username}`)).status, 200);
    assert.deepEqual(await closing, { type: 'closing', code: 4001, reason: 'kicked' });
    const kicked = await closed;
    assert.equal(kicked.code, 4001);
    assert.equal(first.state, 'closed', 'a kick is not undone by a reconnect');

    const second = await joined(user, room);
    const banned = nextEvent(second, 'close', 20_000);
    assert.equal((await api('PUT', `/rooms/${room}/bans/${user.username}`)).status, 200);
    const end = await banned;
    assert.equal(end.error?.status, 403, `a ban ends the room: ${JSON.stringify(end)}`);
    assert.equal(second.state, 'closed');
  });
});

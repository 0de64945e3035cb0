// clients/js against the built Worker: what the browser page relies on besides chatting. Badge
// refresh (planned, and before a connect with an expired badge), the `?token=` fallback for a
// server without the `bearer` subprotocol, pause/resume with read markers, and catch-ups the
// server cut short, completed over HTTP (a gap filled after `since`, a reload after `rev`).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Clubhouse, FAST, PASSWORD, WebSocketImpl, allMessages, expiredBadge, newClient, nextEvent, start, uniqueName,
  until,
} from './helpers.mjs';
import { badgeClaims } from '../../clients/js/clubhouse.js';

let server;
before(async () => {
  server = await start();
});
/** Every room a test connects, closed at the end even when the test failed half-way. */
const rooms = [];
const connect = Clubhouse.prototype.connect;
Clubhouse.prototype.connect = function track(...args) {
  const room = connect.apply(this, args);
  rooms.push(room);
  return room;
};
after(async () => {
  for (const room of rooms) room.close();
  await server?.stop();
  server?.cleanup();
});

/** `count` messages `line 1`… into `room` over a plain socket of `club`'s user, fast. */
async function flood(club, room, count) {
  const ws = new WebSocketImpl(`${server.baseUrl.replace(/^http/, 'ws')}/ws/${room}`, ['bearer', club.token]);
  await new Promise((ok, fail) => {
    ws.once('open', ok);
    ws.once('error', fail);
  });
  const done = new Promise((ok) => {
    ws.on('message', (data) => {
      const text = String(data);
      if (text.includes(`"content":"line ${count}"`)) ok();
    });
  });
  for (let i = 1; i <= count; i += 1) ws.send(JSON.stringify({ content: `line ${i}`, room_id: room }));
  await done;
  ws.close();
}

describe('clients/js sessions and catch-ups', () => {
  test('refresh() trades the refresh token for a new badge; autoRefresh renews an expired one before connecting', async () => {
    const alice = await newClient(server, 'alice');
    const first = alice.token;
    const tokens = [];
    alice.on('token', (t) => tokens.push(t));
    const second = await alice.refresh();
    assert.notEqual(second, first);
    assert.equal(alice.token, second);
    assert.deepEqual(tokens, [second]);
    assert.equal(badgeClaims(second).sub, alice.username);
    await assert.rejects(new Clubhouse({ baseUrl: server.baseUrl }).refresh(), (e) => e.status === 401, 'no refresh token');

    // A client whose badge expired while away: the connect refreshes first, then opens.
    const club = new Clubhouse({ baseUrl: server.baseUrl, WebSocket: WebSocketImpl, autoRefresh: true });
    await club.logIn(alice.username, PASSWORD);
    const good = club.token;
    club.token = expiredBadge(alice.username);
    assert.equal(club.expired, true);
    const room = club.connect(uniqueName('room'), FAST);
    await nextEvent(room, 'open');
    assert.notEqual(club.token, good);
    assert.equal(club.expired, false);
    assert.equal((await room.send('after a refresh')).username, alice.username);
    room.close();
    await club.logOut();
    assert.equal(club.token, null);
    await assert.rejects(club.refresh(), (e) => e.status === 401);
  });

  test("transport 'auto' falls back to ?token= when subprotocol handshakes fail, and remembers it", async () => {
    const alice = await newClient(server, 'alice');
    const urls = [];
    /** An older server: a handshake that asks for subprotocols fails; plain ones go through. */
    class NoSubprotocols extends WebSocketImpl {
      constructor(url, protocols) {
        urls.push(url);
        if (protocols && protocols.length) super(url.replace('/ws/', '/ws-refused/'));
        else super(url);
      }
    }
    const club = new Clubhouse({ baseUrl: server.baseUrl, token: alice.token, WebSocket: NoSubprotocols, transport: 'auto' });
    assert.equal(club.transport, 'unknown');
    const name = uniqueName('room');
    const room = club.connect(name, FAST);
    await nextEvent(room, 'open', 20_000);
    assert.equal(club.transport, 'query');
    assert.equal(urls.length, 2);
    assert.ok(!/token=/.test(urls[0]) && /[?&]token=/.test(urls[1]), urls.join(' '));
    assert.equal((await room.send('over the fallback')).content, 'over the fallback');
    room.pause();
    room.resume();
    await nextEvent(room, 'open');
    assert.equal(urls.length, 3);
    assert.match(urls[2], /[?&]token=/, 'the fallback is remembered');
    room.close();

    // A server with the subprotocol: `auto` stays with it, and no badge goes in a URL.
    const plain = new Clubhouse({ baseUrl: server.baseUrl, token: alice.token, WebSocket: WebSocketImpl, transport: 'auto' });
    const r = plain.connect(name, FAST);
    await nextEvent(r, 'open');
    assert.equal(plain.transport, 'bearer');
    r.close();
  });

  test('pause() stays away until resume(), which catches up exactly; read() moves the marker', async () => {
    const [alice, bob] = [await newClient(server, 'alice'), await newClient(server, 'bob')];
    const name = uniqueName('room');
    const ra = alice.connect(name, FAST);
    await nextEvent(ra, 'open');
    const rb = bob.connect(name, FAST);
    await nextEvent(rb, 'open');
    const seen = [];
    rb.on('message', (m) => seen.push(m.content));
    await ra.send('before');
    await until(() => seen.length === 1, 'bob gets the first message');

    const away = nextEvent(rb, 'reconnecting');
    rb.pause();
    assert.equal((await away).delayMs, null);
    assert.equal(rb.state, 'reconnecting');
    for (const t of ['while away 1', 'while away 2']) await ra.send(t);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(rb.state, 'reconnecting', 'paused: no reconnect by itself');
    assert.deepEqual(seen, ['before']);
    const pending = rb.send('sent while paused');
    rb.resume();
    assert.equal((await nextEvent(rb, 'open')).resumed, true);
    const mine = await pending;
    assert.equal(mine.content, 'sent while paused');
    await until(() => seen.length === 4, 'bob catches up');
    assert.deepEqual(seen, ['before', 'while away 1', 'while away 2', 'sent while paused']);

    // Alice reads Bob's message: Bob gets her receipt.
    await until(() => ra.lastId === mine.id, 'alice gets bob\'s message');
    const receipt = nextEvent(rb, 'read');
    assert.equal(ra.read(mine.id), true);
    const read = await receipt;
    assert.equal(read.username, alice.username);
    assert.equal(read.id, mine.id);
    ra.close();
    rb.close();
    assert.equal(rb.read(1), false, 'nothing is sent once closed');
  });

  test('a rev catch-up cut short is completed by a reload over HTTP before live frames go on', async () => {
    const [reader, writer] = [await newClient(server, 'rita'), await newClient(server, 'walt')];
    const name = uniqueName('busy');
    const rw = writer.connect(name, FAST);
    await nextEvent(rw, 'open');
    const first = await rw.send('line 0');
    await rw.send('to be edited');
    const rr = reader.connect(name, FAST);
    await nextEvent(rr, 'open');
    const shown = new Map(); // id -> content, as a page would keep it
    rr.on('message', (m) => shown.set(m.id, m.deleted ? null : m.content));
    rr.on('edited', (e) => shown.has(e.id) && shown.set(e.id, e.content));
    const reloads = [];
    rr.on('reload', (r) => {
      reloads.push(r);
      for (const m of r.messages) shown.set(m.id, m.deleted ? null : m.content);
    });
    await rw.send('seen live');
    await until(() => shown.size === 1, 'the reader sees a live message');

    rr.pause();
    const edited = (await allMessages(writer, name)).find((m) => m.content === 'to be edited');
    rw.edit(edited.id, 'edited while away');
    await nextEvent(rw, 'edited');
    await flood(writer, name, 1100);
    const history = nextEvent(rr, 'history', 30_000);
    rr.resume();
    const h = await history;
    assert.equal(h.truncated, true);
    assert.equal(h.complete, true);
    assert.equal(reloads.length, 1, 'one reload');
    const live = await rw.send('live after the catch-up');
    await until(() => shown.has(live.id), 'a live message after the reload');
    const stored = await allMessages(writer, name);
    const wanted = new Map(stored.filter((m) => m.id >= first.id).map((m) => [m.id, m.content]));
    for (const [id, content] of wanted) assert.equal(shown.get(id), content, `message ${id}`);
    assert.ok(reloads[0].messages.length >= 1100, `${reloads[0].messages.length} messages reloaded`);
    assert.equal(shown.get(edited.id), 'edited while away');
    assert.equal(rr.lastRev, rw.lastRev);
    rr.close();
    rw.close();
  });

  test('a since catch-up cut short is filled in over HTTP: every message once, in id order', async () => {
    const [reader, writer] = [await newClient(server, 'rita'), await newClient(server, 'walt')];
    const name = uniqueName('busy');
    /** A server that predates revisions: no `rev` in its frames, a catch-up by `since` alone. */
    class NoRev extends WebSocketImpl {
      constructor(url, protocols) {
        super(url.replace(/([?&])rev=\d+&?/, '$1').replace(/[?&]$/, ''), protocols);
      }
      set onmessage(listener) {
        super.onmessage = (event) => {
          if (event.data === 'pong') return listener(event);
          const frame = JSON.parse(event.data);
          delete frame.rev;
          for (const m of frame.messages ?? []) delete m.rev;
          return listener({ data: JSON.stringify(frame) });
        };
      }
    }
    const club = new Clubhouse({ baseUrl: server.baseUrl, token: reader.token, WebSocket: NoRev });
    const rw = writer.connect(name, FAST);
    await nextEvent(rw, 'open');
    await rw.send('line 0');
    const rr = club.connect(name, FAST);
    const got = [];
    rr.on('message', (m) => got.push(m));
    const firstHistory = await nextEvent(rr, 'history');
    assert.deepEqual(firstHistory.messages.map((m) => m.content), ['line 0']);
    rr.pause();
    await flood(writer, name, 1150);
    const history = nextEvent(rr, 'history', 30_000);
    rr.resume();
    const h = await history;
    assert.equal(h.truncated, true);
    assert.equal(h.complete, true);
    assert.deepEqual(got.map((m) => m.content), Array.from({ length: 1150 }, (_, i) => `line ${i + 1}`));
    assert.ok(!rr.lastRev, 'no revisions seen');
    for (let i = 1; i < got.length; i += 1) assert.ok(got[i].id > got[i - 1].id, 'in id order');
    rr.close();
    rw.close();
  });
});

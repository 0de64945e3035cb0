// clients/js against a server that lets a user send one frame a second in a room (burst 1): an
// error frame is a send's answer only when it names the send's client_id, so a refused edit does
// not touch the message in flight, and a send's own `rate limited` is sent again after the pause.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Clubhouse, WebSocketImpl, allMessages, joined, newClient, slowMessagesWebSocket, start, uniqueName, until,
} from './helpers.mjs';

let server;
before(async () => {
  server = await start({ RATE_LIMIT_PER_SEC: '1', RATE_LIMIT_BURST: '1' });
});
after(async () => {
  await server?.stop();
  server?.cleanup();
});

describe('error frames and the message in flight', () => {
  test('an edit rate limited while a message is in flight is an error event; the message is delivered once', async () => {
    const alice = await newClient(server, 'alice');
    const room = uniqueName('limit');
    const slow = new Clubhouse({ baseUrl: server.baseUrl, token: alice.token, WebSocket: slowMessagesWebSocket(300) });
    const ra = await joined(slow, room);
    // Takes the user's one token for the next second.
    const zero = await ra.send('zero');
    const errors = [];
    let settled = false;
    const beforeEcho = [];
    ra.on('error', (e) => {
      errors.push(e);
      if (!settled) beforeEcho.push(e);
    });
    // The message is in flight (its frame held on the way) while the server refuses the edit; the
    // message, refused too when it arrives within the second, goes again after the pause.
    const sent = ra.send('first').finally(() => {
      settled = true;
    });
    assert.equal(ra.edit(zero.id, 'changed'), true);
    await until(() => errors.length === 1, 'the edit refused as an error event');
    const echo = await sent;
    assert.equal(echo.content, 'first');
    const [refusal] = errors;
    assert.deepEqual(Object.keys(refusal).sort(), ['change', 'client_id', 'detail', 'retry_after_ms', 'type']);
    assert.equal(refusal.detail, 'rate limited');
    assert.deepEqual(refusal.change, { type: 'edit', id: zero.id, content: 'changed' });
    assert.ok(refusal.retry_after_ms > 0 && refusal.retry_after_ms <= 1000, JSON.stringify(refusal));
    assert.equal(beforeEcho.length, 1, 'the refusal came while the message was in flight');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(errors.length, 1, "the message's own refusal is no error event");
    const stored = await allMessages(alice, room);
    assert.deepEqual(stored.map((m) => m.content), ['zero', 'first']);
    ra.close();
  });

  test('a send refused as rate limited goes again after the pause, without an error event', async () => {
    const alice = await newClient(server, 'alice');
    const room = uniqueName('limit');
    const framesOut = new Map();
    /** Counts each message frame that goes out, by client_id. */
    class CountingWebSocket extends WebSocketImpl {
      send(data) {
        const clientId = data.startsWith('{') ? JSON.parse(data).client_id : undefined;
        if (clientId) framesOut.set(clientId, (framesOut.get(clientId) ?? 0) + 1);
        super.send(data);
      }
    }
    const club = new Clubhouse({ baseUrl: server.baseUrl, token: alice.token, WebSocket: CountingWebSocket });
    const ra = await joined(club, room);
    const errors = [];
    ra.on('error', (e) => errors.push(e));
    const [one, two] = await Promise.all([ra.send('one', { clientId: 'one' }), ra.send('two', { clientId: 'two' })]);
    assert.deepEqual([one.content, two.content], ['one', 'two']);
    assert.equal(two.id, one.id + 1);
    assert.equal(framesOut.get('one'), 1);
    assert.ok(framesOut.get('two') >= 2, `"two" went out ${framesOut.get('two')} times`);
    assert.ok(two.ts - one.ts >= 500, `sent again after the pause: ${two.ts - one.ts} ms`);
    assert.deepEqual(errors, []);
    const stored = await allMessages(alice, room);
    assert.deepEqual(stored.map((m) => m.content), ['one', 'two']);
    ra.close();
  });
});

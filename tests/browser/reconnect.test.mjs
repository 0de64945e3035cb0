// Reconnection: after a dropped socket and after a server restart (same state), the client comes
// back by itself, catches up with since=<last id>, and shows every message exactly once, in order.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  assertClean,
  assertOrderedUnique,
  joinRoom,
  messages,
  openClient,
  screenshotPath,
  send,
  signUp,
  uniqueName,
  waitConnected,
  waitForMessage,
  waitStatus,
  withServerAndBrowser,
  twoUsersInRoom,
} from './helpers.mjs';

/** Every text in `texts` appears exactly once in the view, in this order. */
async function assertExactlyOnceInOrder(page, texts) {
  const view = await assertOrderedUnique(page);
  const shown = view.map((m) => m.text);
  const positions = texts.map((t) => {
    const count = shown.filter((s) => s === t).length;
    assert.equal(count, 1, `"${t}" shown ${count} times`);
    return shown.indexOf(t);
  });
  for (let i = 1; i < positions.length; i += 1) {
    assert.ok(positions[i] > positions[i - 1], `"${texts[i]}" shown before "${texts[i - 1]}"`);
  }
  return view;
}

test('recovers from a dropped socket and a server restart with no duplicate and no gap', { timeout: 240_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('room');
    const { alice, bob } = await twoUsersInRoom(browser, server.baseUrl, room);
    await send(alice, 'before the drop');
    await waitForMessage(bob.page, 'before the drop');
    await send(bob, 'me too');
    await waitForMessage(alice.page, 'me too');

    // 1. Alice's socket drops (closed from the page) and stays down while Bob talks.
    const dropped = await alice.page.evaluate(() => window.__clubhouse.dropSocket(true));
    assert.ok(dropped);
    await waitStatus(alice.page, 'reconnecting');
    await alice.page.locator('#banner').getByText(/Reconnecting/).waitFor({ state: 'visible' });
    assert.match(await alice.page.locator('#conn-status').textContent(), /Reconnecting/);
    assert.ok(await alice.page.locator('#send-btn').isDisabled(), 'send must be disabled while offline');
    await alice.page.screenshot({ path: screenshotPath('reconnecting.png') });
    const outage1 = ['during the drop 1', 'during the drop 2', 'during the drop 3'];
    for (const t of outage1) await send(bob, t);
    await waitForMessage(bob.page, outage1[2]);
    await alice.page.evaluate(() => window.__clubhouse.resume());
    await waitConnected(alice.page);
    await waitForMessage(alice.page, outage1[2]);
    await send(alice, 'back after the drop');
    await waitForMessage(bob.page, 'back after the drop');
    // Alice's own copy too: otherwise the check can read her page between the frame's arrival
    // and its rendering (the client's index already has it, the list not yet).
    await waitForMessage(alice.page, 'back after the drop');
    await assertExactlyOnceInOrder(alice.page, ['before the drop', 'me too', ...outage1, 'back after the drop']);

    // 2. A dropped socket that is NOT held reconnects on its own (backoff), with nothing doubled.
    await alice.page.evaluate(() => window.__clubhouse.dropSocket(false));
    await waitConnected(alice.page, 20_000);
    await send(bob, 'after the quick drop');
    await waitForMessage(alice.page, 'after the quick drop');
    await assertOrderedUnique(alice.page);

    // 3. The server restarts on the same state. Alice is held down; Bob reconnects by himself and
    //    writes while Alice is away; then Alice comes back and catches up.
    await alice.page.evaluate(() => window.__clubhouse.dropSocket(true));
    await waitStatus(alice.page, 'reconnecting');
    await server.restart();
    await waitStatus(bob.page, 'reconnecting', 20_000).catch(() => {}); // may already be back
    await waitConnected(bob.page, 60_000);
    const outage2 = ['after the restart 1', 'after the restart 2', 'after the restart 3'];
    for (const t of outage2) await send(bob, t);
    await waitForMessage(bob.page, outage2[2]);
    await alice.page.evaluate(() => window.__clubhouse.resume());
    await waitConnected(alice.page, 60_000);
    await waitForMessage(alice.page, outage2[2]);

    // 4. A second restart with nobody held: both come back by themselves and keep talking.
    await server.restart();
    await waitConnected(alice.page, 60_000);
    await waitConnected(bob.page, 60_000);
    await send(alice, 'final word');
    await waitForMessage(bob.page, 'final word');
    await waitForMessage(alice.page, 'final word');

    const expected = [
      'before the drop', 'me too', ...outage1, 'back after the drop', 'after the quick drop', ...outage2, 'final word',
    ];
    const aliceView = await assertExactlyOnceInOrder(alice.page, expected);
    const bobView = await assertExactlyOnceInOrder(bob.page, expected);
    assert.deepEqual(aliceView, bobView);
    assert.equal(aliceView.length, expected.length);

    // A fresh page load (token still in sessionStorage) shows the same history from the server.
    await alice.page.reload();
    await waitConnected(alice.page);
    await waitForMessage(alice.page, 'final word');
    assert.deepEqual((await messages(alice.page)).map((m) => m.text), expected);

    // Catching up asked for what came after the last id seen, not the whole history again.
    assert.ok(alice.sockets.some((u) => /[?&]since=\d+/.test(u)), `no since= in ${alice.sockets.join(' ')}`);

    assertClean(alice);
    assertClean(bob);
  });
});

test('a long outage (more than the server replays) is filled in over HTTP with no gap', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('busy');
    const reader = await openClient(browser, server.baseUrl);
    const writer = await openClient(browser, server.baseUrl);
    await signUp(reader, uniqueName('rita'));
    await signUp(writer, uniqueName('walt'));
    await joinRoom(reader, room);
    await joinRoom(writer, room);
    await send(writer, 'line 0');
    await waitForMessage(reader.page, 'line 0');

    await reader.page.evaluate(() => window.__clubhouse.dropSocket(true));
    await waitStatus(reader.page, 'reconnecting');
    const total = 1150; // the server replays at most 1000 missed messages on reconnect
    await writer.page.evaluate(
      async ([r, n]) => {
        const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws/${r}`, ['bearer', sessionStorage.getItem('clubhouse.token')]);
        await new Promise((ok, fail) => {
          ws.onopen = ok;
          ws.onerror = fail;
        });
        const done = new Promise((ok) => {
          ws.onmessage = (e) => {
            const f = JSON.parse(e.data);
            if (f.type === 'message' && f.content === `line ${n}`) ok();
          };
        });
        for (let i = 1; i <= n; i += 1) ws.send(JSON.stringify({ content: `line ${i}`, room_id: r }));
        await done;
        ws.close();
      },
      [room, total],
    );
    await reader.page.evaluate(() => window.__clubhouse.resume());
    await waitConnected(reader.page, 30_000);
    await waitForMessage(reader.page, `line ${total}`, 30_000);
    await reader.page.waitForFunction((n) => document.querySelectorAll('#messages li.msg').length >= n + 1, total, { timeout: 30_000 });
    const view = await assertOrderedUnique(reader.page);
    assert.deepEqual(view.map((m) => m.text), Array.from({ length: total + 1 }, (_, i) => `line ${i}`));
    assertClean(reader);
  });
});

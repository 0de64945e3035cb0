// Reconnection: after a dropped socket and after a server restart (same state), the client comes
// back by itself, catches up with since=<last id> and rev=<last rev>, and shows every message
// exactly once, in order, in its current state (edits, deletions and reactions made while away).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  assertClean,
  assertOrderedUnique,
  clickChip,
  deleteViaMenu,
  editViaMenu,
  eventually,
  idOf,
  messageStates,
  reactViaPalette,
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

test('catches up with edits, deletions and reactions made while away (rev=)', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('room');
    const { alice, bob } = await twoUsersInRoom(browser, server.baseUrl, room);
    await send(bob, 'to be edited');
    await send(bob, 'to be deleted');
    await send(bob, 'to get reactions');
    await send(alice, 'alice before');
    const edited = await idOf(alice.page, 'to be edited');
    const deleted = await idOf(alice.page, 'to be deleted');
    const reacted = await idOf(alice.page, 'to get reactions');
    const hers = await idOf(bob.page, 'alice before');
    await reactViaPalette(alice.page, deleted, '👍');
    await reactViaPalette(alice.page, reacted, '❤️');
    await reactViaPalette(alice.page, hers, '😮');
    // What each sees, without whose reactions are whose (that differs by viewer).
    const view = async (page) =>
      (await messageStates(page)).map((m) => ({
        ...m,
        reactions: Object.fromEntries(Object.entries(m.reactions).map(([e, r]) => [e, r.count])),
      }));
    await eventually(() => view(bob.page), await view(alice.page), "Bob's view before the drop");
    const before = await view(alice.page);
    assert.deepEqual(before.find((m) => m.id === reacted).reactions, { '❤️': 1 });

    // Alice drops off; meanwhile Bob edits, deletes, reacts, posts, and changes his new posts.
    await alice.page.evaluate(() => window.__clubhouse.dropSocket(true));
    await waitStatus(alice.page, 'reconnecting');
    const revAway = await alice.page.evaluate(() => window.__clubhouse.rev());
    assert.ok(revAway > 0, `the page knows no rev (${revAway})`);
    await editViaMenu(bob.page, edited, 'edited while away');
    await deleteViaMenu(bob.page, deleted);
    await reactViaPalette(bob.page, reacted, '🎉');
    await clickChip(bob.page, reacted, '❤️'); // Bob joins Alice's ❤️
    await reactViaPalette(bob.page, hers, '👍');
    await clickChip(bob.page, hers, '😮');
    const hersReactions = async () => (await messageStates(bob.page)).find((m) => m.id === hers).reactions;
    await eventually(hersReactions, { '😮': { count: 2, mine: true }, '👍': { count: 1, mine: true } }, "Bob's 😮");
    await clickChip(bob.page, hers, '😮'); // and takes it back: Alice's 😮 alone again
    await send(bob, 'new while away');
    const fresh = await idOf(bob.page, 'new while away');
    await editViaMenu(bob.page, fresh, 'new, then edited');
    await reactViaPalette(bob.page, fresh, '😢');
    await send(bob, 'new and gone');
    const gone = await idOf(bob.page, 'new and gone');
    await deleteViaMenu(bob.page, gone);
    const expected = [
      { id: edited, user: bob.username, text: 'edited while away', edited: true, deleted: false, reactions: {} },
      { id: deleted, user: bob.username, text: 'message deleted', edited: false, deleted: true, reactions: {} },
      { id: reacted, user: bob.username, text: 'to get reactions', edited: false, deleted: false, reactions: { '❤️': 2, '🎉': 1 } },
      { id: hers, user: alice.username, text: 'alice before', edited: false, deleted: false, reactions: { '😮': 1, '👍': 1 } },
      { id: fresh, user: bob.username, text: 'new, then edited', edited: true, deleted: false, reactions: { '😢': 1 } },
      { id: gone, user: bob.username, text: 'message deleted', edited: false, deleted: true, reactions: {} },
    ];
    await eventually(() => view(bob.page), expected, "Bob's view");
    // Still away: Alice's page has none of it.
    assert.deepEqual(await view(alice.page), before);

    // Back: the catch-up brings exactly the room's state, and the same rev as Bob's page.
    await alice.page.evaluate(() => window.__clubhouse.resume());
    await waitConnected(alice.page);
    await eventually(() => view(alice.page), expected, "Alice's view after the catch-up");
    const url = alice.sockets[alice.sockets.length - 1];
    assert.match(url, new RegExp(`[?&]rev=${revAway}(&|$)`), `the reconnect did not ask for rev=${revAway}: ${url}`);
    await eventually(() => alice.page.evaluate(() => window.__clubhouse.rev()), await bob.page.evaluate(() => window.__clubhouse.rev()), 'the rev');
    const aliceMine = (await messageStates(alice.page)).find((m) => m.id === reacted).reactions;
    assert.deepEqual(aliceMine, { '❤️': { count: 2, mine: true }, '🎉': { count: 1, mine: false } });
    await assertOrderedUnique(alice.page);

    // Live changes still come through after the catch-up.
    await editViaMenu(bob.page, reacted, 'and one more edit');
    await eventually(
      async () => (await view(alice.page)).find((m) => m.id === reacted).text,
      'and one more edit',
      'a live edit after the catch-up',
    );

    // A fresh load shows the same state from the server.
    const now = await view(alice.page);
    await alice.page.reload();
    await waitConnected(alice.page);
    await eventually(() => view(alice.page), now, "Alice's view after a reload");
    assertClean(alice);
    assertClean(bob);
  });
});

// Direct messages between two people: starting a DM from either side lands in the same room,
// the sidebar shows unread counts and the last message for rooms not in view, and a read
// receipt ("Seen") shows under the sender's last message once the other person has read it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  assertClean,
  eventually,
  joinRoom,
  openClient,
  screenshotPath,
  send,
  sidebarEntry,
  signUp,
  tokenOf,
  uniqueName,
  waitConnected,
  waitForMessage,
  withServerAndBrowser,
} from './helpers.mjs';

/** Starts a DM with `name` from the sidebar form; the DM's room id once connected there. */
async function startDm(client, name) {
  const { page } = client;
  await page.fill('#dm-input', name);
  await page.click('#dm-btn');
  await page.waitForFunction(() => /^dm\.[0-9a-f]{32}$/.test(window.__clubhouse.room() || ''));
  await waitConnected(page);
  return page.evaluate(() => window.__clubhouse.room());
}

test('DMs: the same room from both sides, sidebar unread counts, read receipt', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const alice = await openClient(browser, server.baseUrl);
    const bob = await openClient(browser, server.baseUrl);
    await signUp(alice, uniqueName('alice'));
    await signUp(bob, uniqueName('bob'));
    await waitConnected(alice.page);
    await waitConnected(bob.page);

    // Nobody by that name, or yourself: told inline, no room change.
    await alice.page.fill('#dm-input', uniqueName('ghost'));
    await alice.page.click('#dm-btn');
    await alice.page.locator('#dm-error').getByText(/Nobody is called/).waitFor();

    // Alice starts the DM; Bob starts it from his side and lands in the same room.
    const room = await startDm(alice, bob.username);
    assert.equal(await alice.page.textContent('#room-title'), `@ ${bob.username}`);
    await alice.page.locator('#room-badge').getByText('direct message').waitFor();
    const bobsRoom = await startDm(bob, alice.username.toUpperCase());
    assert.equal(bobsRoom, room, 'one DM whichever side starts it');
    assert.equal(await bob.page.textContent('#room-title'), `@ ${alice.username}`);
    await send(bob, 'hello alice');
    await waitForMessage(alice.page, 'hello alice');

    // Bob goes elsewhere; Alice writes twice. His sidebar counts them (refreshed periodically).
    await joinRoom(bob, 'lobby');
    await send(alice, 'are you there?');
    await send(alice, 'ping me when you are back');
    await eventually(
      async () => {
        const e = await sidebarEntry(bob.page, room);
        return e && { unread: e.unread, last: e.last, label: e.label };
      },
      { unread: '2', last: `${alice.username}: ping me when you are back`, label: `@ ${alice.username}` },
      "Bob's sidebar entry for the DM",
      25_000,
    );
    assert.equal(await alice.page.isVisible('#receipt'), false, 'not seen yet');

    // Bob opens the DM from the sidebar: he reads it, and Alice sees it was seen.
    await bob.page.click(`#room-list li[data-room="${room}"] a`);
    await waitForMessage(bob.page, 'ping me when you are back');
    await alice.page.locator('#receipt').getByText(`Seen by ${bob.username}`).waitFor({ timeout: 15_000 });
    assert.equal((await sidebarEntry(bob.page, room)).unread, '', 'nothing unread in the room in view');
    await alice.page.screenshot({ path: screenshotPath('dm.png') });
    // After a reload Alice still sees it: the DM tells a new socket how far Bob has read.
    await alice.page.reload();
    await waitConnected(alice.page);
    assert.equal(await alice.page.evaluate(() => window.__clubhouse.room()), room);
    await alice.page.locator('#receipt').getByText(`Seen by ${bob.username}`).waitFor({ timeout: 15_000 });

    // The marker is durable: back in the lobby, the refreshed list has nothing unread there.
    await joinRoom(bob, 'lobby');
    await eventually(
      () => bob.page.evaluate((r) => window.__clubhouse.sidebar().find((e) => e.room_id === r)?.unread, room),
      0,
      'unread after reading, from the server',
      25_000,
    );
    // A new message from Alice hides her "Seen" until Bob reads again.
    await send(alice, 'one more');
    await alice.page.locator('#receipt').waitFor({ state: 'hidden' });

    // Bob blocks Alice: her socket in the DM closes, and the DM, opened again, says why instead
    // of showing its history.
    const bobsToken = await tokenOf(bob.page);
    const blocked = await bob.page.evaluate(
      async ([name, token]) => (await fetch(`/users/me/blocks/${name}`, { method: 'PUT', headers: { authorization: `Bearer ${token}` } })).status,
      [alice.username, bobsToken],
    );
    assert.equal(blocked, 200);
    await alice.page.locator('#banner-text').getByText(`${bob.username} does not accept your messages.`).waitFor({ timeout: 15_000 });
    await alice.page.reload();
    await alice.page.locator('#banner-text').getByText(`${bob.username} does not accept your messages.`).waitFor({ timeout: 15_000 });
    assert.equal(await alice.page.locator('#messages li').count(), 0, 'no history for a blocked member');
    assert.equal(await alice.page.isDisabled('#message-input'), true);
    // The sidebar's refresh (every 10 s) still lists the DM, and must not take it for an invitation.
    await alice.page.waitForTimeout(11_000);
    await alice.page.locator('#banner-text').getByText(`${bob.username} does not accept your messages.`).waitFor({ timeout: 1_000 });

    assertClean(alice);
    assertClean(bob);
  });
});

// Every room at once, without a socket per room: the sidebar (GET /me/rooms, polled, and bumped
// live for the room in view) with rooms and direct messages apart, unread counts in the tab title,
// the room in view marking itself read, and a hidden tab counting what comes into it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  assertClean,
  eventually,
  joinRoom,
  openClient,
  send,
  sidebarEntry,
  signUp,
  uniqueName,
  waitConnected,
  waitForMessage,
  withServerAndBrowser,
} from './helpers.mjs';

/** The sidebar as shown: per group (rooms, dms), the room ids in order. */
function groups(page) {
  return page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('#room-list .room-group')].map((g) => [
        g.dataset.group,
        [...g.querySelectorAll('li[data-room]')].map((li) => li.dataset.room),
      ]),
    ),
  );
}

async function lastLine(page, room) {
  return (await sidebarEntry(page, room))?.last ?? '';
}

/** Makes the page believe its tab is hidden (or visible again), as switching tabs would. */
function setHidden(page, hidden) {
  return page.evaluate((h) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

test('the sidebar: rooms and DMs apart, unread in the tab title, live for the room in view', { timeout: 240_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const alice = await openClient(browser, server.baseUrl);
    const bob = await openClient(browser, server.baseUrl);
    await signUp(alice, uniqueName('alice'));
    await signUp(bob, uniqueName('bob'));
    const plaza = uniqueName('plaza');
    const quiet = uniqueName('quiet');
    for (const c of [alice, bob]) {
      await joinRoom(c, quiet);
      await joinRoom(c, plaza);
    }

    // A DM: listed under direct messages, apart from the rooms.
    await alice.page.fill('#dm-input', bob.username);
    await alice.page.click('#dm-btn');
    await alice.page.waitForFunction(() => /^dm\./.test(window.__clubhouse.room() || ''));
    await waitConnected(alice.page);
    const dm = await alice.page.evaluate(() => window.__clubhouse.room());
    await send(alice, 'hi bob');
    await eventually(async () => (await groups(bob.page)).dms, [dm], "Bob's DM group", 25_000);
    await eventually(() => bob.page.title(), `(1) # ${plaza} · Clubhouse`, 'the DM unread in the title', 25_000);
    const bobGroups = await groups(bob.page);
    assert.ok(bobGroups.rooms.includes(plaza) && bobGroups.rooms.includes(quiet), JSON.stringify(bobGroups));
    assert.ok(!bobGroups.rooms.includes(dm));

    // The room in view: a message there shows in its entry at once (no poll), and is not unread.
    await joinRoom(alice, plaza);
    await send(alice, 'live in the plaza');
    await waitForMessage(bob.page, 'live in the plaza');
    assert.equal(await lastLine(bob.page, plaza), `${alice.username}: live in the plaza`);
    assert.equal(await bob.page.title(), `(1) # ${plaza} · Clubhouse`, 'the room in view adds nothing');

    // Elsewhere: counted in the title once the list is refreshed.
    await joinRoom(alice, quiet);
    await send(alice, 'one');
    await send(alice, 'two');
    await eventually(() => bob.page.title(), `(3) # ${plaza} · Clubhouse`, "Bob's title", 25_000);

    // Bob opens the quiet room: the count drops by its two, and it marks itself read, even when
    // left at once.
    await bob.page.click(`#room-list li[data-room="${quiet}"] a`);
    await waitForMessage(bob.page, 'two');
    assert.equal(await bob.page.title(), `(1) # ${quiet} · Clubhouse`);
    await joinRoom(bob, plaza);
    await eventually(
      () => bob.page.evaluate((r) => window.__clubhouse.sidebar().find((e) => e.room_id === r)?.unread, quiet),
      0,
      'the server has the quiet room read',
      25_000,
    );

    // A hidden tab counts what comes into the room in view, and reads it when shown again.
    await setHidden(bob.page, true);
    await joinRoom(alice, plaza);
    await send(alice, 'while you look away');
    await waitForMessage(bob.page, 'while you look away');
    assert.equal(await bob.page.title(), `(2) # ${plaza} · Clubhouse`);
    await setHidden(bob.page, false);
    assert.equal(await bob.page.title(), `(1) # ${plaza} · Clubhouse`);

    // Reading the DM clears the last unread message: a bare title.
    await bob.page.click(`#room-list li[data-room="${dm}"] a`);
    await waitForMessage(bob.page, 'hi bob');
    await eventually(() => bob.page.title(), `@ ${alice.username} · Clubhouse`, 'a bare title', 25_000);

    assertClean(alice);
    assertClean(bob);
  });
});

// Private rooms (create, add and remove members; a removed member is told and does not
// reconnect; outsiders are refused) and paging back through history with "Load older".

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  assertClean,
  assertOrderedUnique,
  joinRoom,
  messages,
  openClient,
  send,
  signUp,
  tokenOf,
  uniqueName,
  waitConnected,
  waitForMessage,
  waitForNotice,
  waitStatus,
  withServerAndBrowser,
} from './helpers.mjs';

test('private room: owner adds and removes a member, outsiders refused', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const owner = await openClient(browser, server.baseUrl);
    const member = await openClient(browser, server.baseUrl);
    const outsider = await openClient(browser, server.baseUrl);
    await signUp(owner, uniqueName('olga'));
    await signUp(member, uniqueName('mika'));
    await signUp(outsider, uniqueName('otto'));
    const room = uniqueName('secret');

    // Create it from the room form.
    await owner.page.fill('#room-input', room);
    await owner.page.click('#create-private-btn');
    await owner.page.waitForFunction((r) => window.__clubhouse.room() === r, room);
    await waitConnected(owner.page);
    await owner.page.locator('#room-badge').getByText(/private/).waitFor();
    await owner.page.locator('#members-panel').waitFor({ state: 'visible' });

    // The same name again is refused inline.
    await owner.page.fill('#room-input', room);
    await owner.page.click('#create-private-btn');
    await owner.page.locator('#room-error').getByText(/already exists/).waitFor();

    // An outsider is refused and told why; no reconnect loop.
    await outsider.page.fill('#room-input', room);
    await outsider.page.click('#join-btn');
    await outsider.page.locator('#banner').getByText(/private room/).waitFor();
    await waitStatus(outsider.page, 'closed');

    // The owner adds the member, who can then join and talk.
    await owner.page.fill('#member-input', member.username);
    await owner.page.click('#member-form button[type=submit]');
    await owner.page.locator('#member-list').getByText(member.username, { exact: true }).waitFor();
    await joinRoom(member, room);
    await send(member, 'thanks for the invite');
    await waitForMessage(owner.page, 'thanks for the invite');

    // Removed: the member sees a notice and stays disconnected.
    await owner.page.click(`#member-list button[data-member="${member.username}"]`);
    await waitForNotice(member.page, 'removed');
    await waitStatus(member.page, 'closed');
    await member.page.waitForTimeout(3000);
    assert.equal(await member.page.evaluate(() => window.__clubhouse.status()), 'closed', 'a removed member must not reconnect');
    assert.ok(await member.page.locator('#send-btn').isDisabled());

    assertClean(owner);
    assertClean(member);
    assertClean(outsider);
  });
});

test('load older history over HTTP, in order, no duplicates', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const writer = await openClient(browser, server.baseUrl);
    await signUp(writer, uniqueName('wren'));
    const room = uniqueName('long');
    await joinRoom(writer, room);
    // 120 messages straight over a socket of the page's own (faster than typing them).
    const total = 120;
    await writer.page.evaluate(
      async ([r, n]) => {
        const token = sessionStorage.getItem('clubhouse.token');
        const url = `${location.origin.replace(/^http/, 'ws')}/ws/${r}`;
        const ws = new WebSocket(url, ['bearer', token]);
        await new Promise((ok, fail) => {
          ws.onopen = ok;
          ws.onerror = fail;
        });
        for (let i = 1; i <= n; i += 1) ws.send(JSON.stringify({ content: `line ${i}`, room_id: r }));
        await new Promise((ok) => {
          ws.onmessage = (e) => {
            const f = JSON.parse(e.data);
            if (f.type === 'message' && f.content === `line ${n}`) ok();
          };
        });
        ws.close();
      },
      [room, total],
    );
    await waitForMessage(writer.page, `line ${total}`);

    const reader = await openClient(browser, server.baseUrl);
    await signUp(reader, uniqueName('rhea'));
    await joinRoom(reader, room);
    await waitForMessage(reader.page, `line ${total}`);
    const first = await messages(reader.page);
    assert.ok(first.length >= 1 && first.length < total, `expected a recent page, got ${first.length}`);
    const older = reader.page.locator('#load-older');
    while (await older.isVisible()) {
      const before = (await messages(reader.page)).length;
      await older.click();
      await reader.page.waitForFunction(
        (n) => document.querySelectorAll('#messages li.msg').length > n || document.getElementById('load-older').hidden,
        before,
      );
    }
    await reader.page.locator('#older-status').getByText(/beginning/).waitFor();
    const all = await assertOrderedUnique(reader.page);
    assert.deepEqual(all.map((m) => m.text), Array.from({ length: total }, (_, i) => `line ${i + 1}`));

    // The token stays out of URLs in the HTTP calls too.
    assert.ok(await tokenOf(reader.page));
    assertClean(writer);
    assertClean(reader);
  });
});

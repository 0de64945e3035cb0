// A private room that refused you, then its owner adds you: the room stays in your list marked as
// refused; Join on it tries again for real; and the list, once it shows the room, tells you that
// you were added (in view: a banner with a Join button; elsewhere: a mark on its entry).

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
  waitStatus,
  withServerAndBrowser,
} from './helpers.mjs';

/** The access mark (refused/added) of `room`'s sidebar entry and the mark's text, or null. */
async function entry(page, room) {
  const e = await sidebarEntry(page, room);
  return e && { access: e.access, note: e.note };
}

async function createPrivate(client, room) {
  const { page } = client;
  await page.fill('#room-input', room);
  await page.click('#create-private-btn');
  await page.waitForFunction((r) => window.__clubhouse.room() === r, room);
  await waitConnected(page);
}

async function addMember(owner, name) {
  await owner.page.fill('#member-input', name);
  await owner.page.click('#member-form button[type=submit]');
  await owner.page.locator('#member-list').getByText(name, { exact: true }).waitFor();
}

/** Presses Join with `room` in the room box. */
async function pressJoin(client, room) {
  await client.page.fill('#room-input', room);
  await client.page.click('#join-btn');
}

test('refused from a private room, then added: listed, Join retries, and told when added', { timeout: 240_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const owner = await openClient(browser, server.baseUrl);
    const guest = await openClient(browser, server.baseUrl);
    await signUp(owner, uniqueName('olga'));
    await signUp(guest, uniqueName('gus'));

    // 1. Refused: told in place, and the room stays in the list, marked.
    const room = uniqueName('secret');
    await createPrivate(owner, room);
    await pressJoin(guest, room);
    await guest.page.locator('#banner').getByText(/private room/).waitFor();
    await waitStatus(guest.page, 'closed');
    assert.deepEqual(await entry(guest.page, room), { access: 'refused', note: 'private: not a member' });

    // 2. Added by the owner, the guest presses Join again (before any list refresh): in, for real.
    await addMember(owner, guest.username);
    await pressJoin(guest, room);
    await waitConnected(guest.page);
    assert.equal(await guest.page.isVisible('#banner'), false, 'the refusal is gone');
    assert.equal((await entry(guest.page, room)).access, null, 'no mark once in');
    await send(guest, 'let me in, thanks');
    await waitForMessage(owner.page, 'let me in, thanks');

    // 3. Refused from another room that stays in view; the owner adds the guest; the next list
    //    refresh says so, and its Join button enters.
    const second = uniqueName('inner');
    await createPrivate(owner, second);
    await pressJoin(guest, second);
    await guest.page.locator('#banner').getByText(/private room/).waitFor();
    await addMember(owner, guest.username);
    await guest.page.locator('#banner').getByText(`You were added to #${second}.`).waitFor({ timeout: 25_000 });
    assert.deepEqual(await entry(guest.page, second), { access: 'added', note: 'you were added' });
    assert.equal(await guest.page.textContent('#retry-now'), 'Join');
    await guest.page.click('#retry-now');
    await waitConnected(guest.page);
    assert.equal(await guest.page.evaluate(() => window.__clubhouse.room()), second);
    assert.equal((await entry(guest.page, second)).access, null);

    // 4. Refused from a third room, the guest goes elsewhere; once added, its entry says so, and a
    //    click on it enters.
    const third = uniqueName('back');
    await createPrivate(owner, third);
    await pressJoin(guest, third);
    await guest.page.locator('#banner').getByText(/private room/).waitFor();
    await joinRoom(guest, 'lobby');
    assert.equal((await entry(guest.page, third)).access, 'refused');
    await addMember(owner, guest.username);
    await eventually(() => entry(guest.page, third), { access: 'added', note: 'you were added' }, 'the mark', 25_000);
    await guest.page.click(`#room-list li[data-room="${third}"] a`);
    await waitConnected(guest.page);
    assert.equal(await guest.page.evaluate(() => window.__clubhouse.room()), third);
    await send(owner, 'welcome in');
    await waitForMessage(guest.page, 'welcome in');

    assertClean(owner);
    assertClean(guest);
  });
});

// Moderation in the page, three people in an owned public room: the owner appoints a moderator
// from the People menu; the moderator deletes a troll's message, mutes and kicks them (the troll
// is told, keeps the message and the edit refused while muted, and rejoins with one click); the owner bans them (told, and kept out). A moderator
// gets no menu on the owner.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  assertClean,
  deleteViaMenu,
  eventually,
  idOf,
  joinRoom,
  messageItem,
  messageState,
  openClient,
  openMessageMenu,
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

/** Opens the People menu on `name` in `page` and clicks `item`. */
async function moderateFromMenu(page, name, item) {
  await page.getByRole('button', { name: `Moderate ${name}` }).click();
  const menu = page.getByRole('menu', { name: `Moderate ${name}` });
  await menu.waitFor({ state: 'visible' });
  await menu.getByRole('menuitem', { name: item }).click();
}

test('owner and moderator: appoint, delete, mute, kick and ban from the People menu', { timeout: 240_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const owner = await openClient(browser, server.baseUrl);
    const mod = await openClient(browser, server.baseUrl);
    const troll = await openClient(browser, server.baseUrl);
    await signUp(owner, uniqueName('olga'));
    await signUp(mod, uniqueName('mia'));
    await signUp(troll, uniqueName('tom'));
    const room = uniqueName('plaza');

    // An owned public room (the API; the page's form makes private ones).
    const created = await owner.page.evaluate(
      async ([room, token]) => {
        const res = await fetch('/rooms', {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ room_id: room, private: false }),
        });
        return res.status;
      },
      [room, await tokenOf(owner.page)],
    );
    assert.equal(created, 201);
    for (const c of [owner, mod, troll]) await joinRoom(c, room);
    await owner.page.locator('#room-badge').getByText(`public · owner ${owner.username}`).waitFor();

    // Members get no moderation menu; the owner gets one on everybody else.
    await owner.page.getByRole('button', { name: `Moderate ${troll.username}` }).waitFor();
    assert.equal(await troll.page.getByRole('button', { name: /^Moderate / }).count(), 0);

    await moderateFromMenu(owner.page, mod.username, 'Make moderator');
    await waitForNotice(owner.page, `${mod.username} is now a moderator.`);
    await mod.page.reload();
    await waitConnected(mod.page);
    await mod.page.getByRole('button', { name: `Moderate ${troll.username}` }).waitFor();
    assert.equal(await mod.page.getByRole('button', { name: `Moderate ${owner.username}` }).count(), 0, 'no menu on the owner');

    // The moderator deletes the troll's message; not the owner's.
    await send(troll, 'buy cheap stuff');
    await send(owner, 'welcome all');
    const spam = await idOf(mod.page, 'buy cheap stuff');
    const welcome = await idOf(mod.page, 'welcome all');
    assert.deepEqual(await openMessageMenu(mod.page, spam), ['Delete…']);
    await mod.page.keyboard.press('Escape');
    assert.ok(await mod.page.locator(`#messages li.msg[data-id="${welcome}"] .more-btn`).isHidden(), 'no menu on the owner\'s message');
    await deleteViaMenu(mod.page, spam);
    for (const c of [owner, troll]) {
      await eventually(async () => (await messageState(c.page, spam)).deleted, true, 'the deletion');
    }

    // Muted: the troll reads but cannot post, and is told; what was refused is not lost (the
    // message is back in the box, the edit in its editor).
    await send(troll, 'a typo herre');
    const typo = await idOf(troll.page, 'a typo herre');
    await moderateFromMenu(mod.page, troll.username, 'Mute for 1 hour');
    await waitForNotice(mod.page, `${troll.username} is muted for an hour.`);
    await troll.page.fill('#message-input', 'still here');
    await troll.page.press('#message-input', 'Enter');
    await troll.page.locator('#send-error').getByText(/muted you/).waitFor();
    assert.equal(await troll.page.inputValue('#message-input'), 'still here');
    await troll.page.fill('#message-input', '');
    await troll.page.keyboard.press('ArrowUp');
    const editor = messageItem(troll.page, typo).locator('.editor textarea');
    await editor.fill('a typo here');
    await editor.evaluate((box) => {
      box.dataset.sent = 'yes';
    });
    await troll.page.keyboard.press('Enter');
    // Saving closes this editor; the refusal opens a new one, with the refused text.
    const reopened = messageItem(troll.page, typo).locator('.editor textarea:not([data-sent])');
    await reopened.waitFor({ state: 'visible' });
    assert.equal(await reopened.inputValue(), 'a typo here');
    await troll.page.locator('#send-error').getByText(/muted you/).waitFor();
    const seen = await messageState(owner.page, typo);
    assert.deepEqual([seen.text, seen.edited], ['a typo herre', false]);
    await troll.page.keyboard.press('Escape');
    await send(owner, 'can you hear me');
    await waitForMessage(troll.page, 'can you hear me');

    // Kicked: told, not reconnected by itself, back with one click.
    await moderateFromMenu(mod.page, troll.username, 'Kick');
    await troll.page.locator('#banner').getByText(/removed you from/).waitFor();
    await waitStatus(troll.page, 'closed');
    await troll.page.getByRole('button', { name: 'Rejoin' }).click();
    await waitConnected(troll.page);

    // Banned by the owner (one more click to confirm): told, and kept out.
    await owner.page.getByRole('button', { name: `Moderate ${troll.username}` }).click();
    const menu = owner.page.getByRole('menu', { name: `Moderate ${troll.username}` });
    await menu.getByRole('menuitem', { name: 'Ban…' }).click();
    await menu.getByRole('menuitem', { name: `Confirm: ban ${troll.username}` }).click();
    await troll.page.locator('#banner').getByText(/You are banned from/).waitFor();
    await waitStatus(troll.page, 'closed');
    await troll.page.reload();
    await troll.page.locator('#banner').getByText(/You are banned from/).waitFor();

    for (const c of [owner, mod, troll]) assertClean(c);
  });
});

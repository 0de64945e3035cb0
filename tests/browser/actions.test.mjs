// Acting on messages, seen by two people in two browser contexts: edit in place (from the menu
// and with the Up arrow) shown as "edited"; delete after a confirmation, shown as "message
// deleted"; the owner of a private room deleting someone else's message; reactions as chips with
// counts (your own highlighted, a click toggles it); "alice is typing…" under the messages.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  assertClean,
  clickChip,
  deleteViaMenu,
  editViaMenu,
  eventually,
  idOf,
  joinRoom,
  messageItem,
  messageState,
  messageStates,
  openClient,
  openMessageMenu,
  reactViaPalette,
  screenshotPath,
  send,
  signUp,
  twoUsersInRoom,
  uniqueName,
  waitConnected,
  waitForMessage,
  withServerAndBrowser,
} from './helpers.mjs';

/** text / edited / deleted of one message as `page` shows it. */
async function shown(page, id) {
  const m = await messageState(page, id);
  return m && { text: m.text, edited: m.edited, deleted: m.deleted };
}

async function reactionsOf(page, id) {
  const m = await messageState(page, id);
  return m && m.reactions;
}

function focusedId(page) {
  return page.evaluate(() => document.activeElement && document.activeElement.id);
}

test('edit from the menu and with the Up arrow; the other person sees "edited"', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('room');
    const { alice, bob } = await twoUsersInRoom(browser, server.baseUrl, room);
    await send(alice, 'first draft');
    await send(alice, 'second draft');
    await send(bob, 'bob was here');
    const first = await idOf(bob.page, 'first draft');
    const second = await idOf(bob.page, 'second draft');
    const bobs = await idOf(alice.page, 'bob was here');

    // Only the author edits: on Alice's messages Bob has no menu at all (a public room has no
    // owner); on his own he has Edit and Delete, and Escape closes the menu back onto its button.
    assert.ok(await messageItem(bob.page, first).locator('.more-btn').isHidden());
    assert.deepEqual(await openMessageMenu(bob.page, bobs), ['Edit', 'Delete…']);
    assert.equal(await bob.page.evaluate(() => document.activeElement.getAttribute('role')), 'menuitem');
    await bob.page.keyboard.press('ArrowDown');
    assert.equal(await bob.page.evaluate(() => document.activeElement.textContent), 'Delete…');
    await bob.page.keyboard.press('Escape');
    await bob.page.locator(`#popup-${bobs}`).waitFor({ state: 'detached' });
    assert.equal(await bob.page.evaluate(() => document.activeElement.className), 'act more-btn');
    assert.equal((await shown(alice.page, first)).edited, false);

    // 1. From the menu: the editor opens in place with the text; Enter saves.
    await editViaMenu(alice.page, first, 'first, edited');
    for (const page of [bob.page, alice.page]) {
      await eventually(() => shown(page, first), { text: 'first, edited', edited: true, deleted: false }, 'the menu edit');
    }
    await bob.page.locator(`#messages li.msg[data-id="${first}"] .edited`).getByText('edited').waitFor({ state: 'visible' });
    assert.deepEqual(await shown(bob.page, second), { text: 'second draft', edited: false, deleted: false });

    // 2. The Up arrow in the empty box edits Alice's last message (Bob's is newer, not hers).
    await alice.page.focus('#message-input');
    await alice.page.keyboard.press('ArrowUp');
    const box = messageItem(alice.page, second).locator('.editor textarea');
    await box.waitFor({ state: 'visible' });
    assert.equal(await box.inputValue(), 'second draft');
    assert.ok(await box.evaluate((n) => n === document.activeElement), 'the editor must have the focus');
    await alice.page.screenshot({ path: screenshotPath('editing.png') });
    await box.fill('second, <b>edited</b>');
    await alice.page.keyboard.press('Enter');
    await box.waitFor({ state: 'detached' });
    assert.equal(await focusedId(alice.page), 'message-input', 'focus goes back to the message box');
    for (const page of [bob.page, alice.page]) {
      await eventually(() => shown(page, second), { text: 'second, <b>edited</b>', edited: true, deleted: false }, 'the Up-arrow edit');
      assert.equal(await page.locator('#messages b').count(), 0, 'markup in an edit became an element');
    }

    // 3. Escape cancels: nothing is sent.
    await alice.page.keyboard.press('ArrowUp');
    await box.waitFor({ state: 'visible' });
    await box.fill('never sent');
    await alice.page.keyboard.press('Escape');
    await box.waitFor({ state: 'detached' });
    assert.equal((await shown(alice.page, second)).text, 'second, <b>edited</b>');
    // An empty edit is refused in the page, and the editor stays open.
    await alice.page.keyboard.press('ArrowUp');
    await box.waitFor({ state: 'visible' });
    await box.fill('   ');
    await box.press('Enter');
    await alice.page.locator('#send-error').getByText(/cannot be empty/).waitFor({ state: 'visible' });
    assert.ok(await box.isVisible());
    await box.press('Escape');
    await box.waitFor({ state: 'detached' });
    await send(alice, 'after the cancel');
    await waitForMessage(bob.page, 'after the cancel');
    assert.deepEqual(await shown(bob.page, second), { text: 'second, <b>edited</b>', edited: true, deleted: false });

    // 4. With text in the box the Up arrow is only a cursor key.
    await alice.page.fill('#message-input', 'half a thought');
    await alice.page.press('#message-input', 'ArrowUp');
    assert.equal(await alice.page.locator('#messages .editor').count(), 0);
    await alice.page.fill('#message-input', '');

    // Both pages agree on the whole conversation.
    const strip = (list) => list.map(({ id, user, text, edited, deleted }) => ({ id, user, text, edited, deleted }));
    assert.deepEqual(strip(await messageStates(alice.page)), strip(await messageStates(bob.page)));
    await bob.page.screenshot({ path: screenshotPath('edited.png') });
    assertClean(alice);
    assertClean(bob);
  });
});

test('delete asks first, then both see "message deleted" (also after a reload)', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('room');
    const { alice, bob } = await twoUsersInRoom(browser, server.baseUrl, room);
    await send(alice, 'keep me');
    await send(alice, 'delete me');
    await send(bob, 'bob stays');
    const keep = await idOf(bob.page, 'keep me');
    const doomed = await idOf(bob.page, 'delete me');
    await idOf(alice.page, 'bob stays');
    // Bob may not delete Alice's message (he is neither its author nor the room's owner).
    assert.ok(await messageItem(bob.page, doomed).locator('.more-btn').isHidden());
    await reactViaPalette(bob.page, doomed, '👍');
    await eventually(() => reactionsOf(alice.page, doomed), { '👍': { count: 1, mine: false } }, 'the reaction');

    // Cancel: nothing happens.
    await openMessageMenu(alice.page, doomed);
    await alice.page.locator(`#popup-${doomed}`).getByRole('menuitem', { name: 'Delete' }).click();
    const confirm = messageItem(alice.page, doomed).locator('.confirm');
    await confirm.getByText('Delete this message?').waitFor({ state: 'visible' });
    assert.equal(await alice.page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the safe choice has the focus');
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    await confirm.waitFor({ state: 'detached' });
    // Escape cancels too.
    await openMessageMenu(alice.page, doomed);
    await alice.page.locator(`#popup-${doomed}`).getByRole('menuitem', { name: 'Delete' }).click();
    await confirm.waitFor({ state: 'visible' });
    await alice.page.keyboard.press('Escape');
    await confirm.waitFor({ state: 'detached' });
    await alice.page.waitForTimeout(500);
    assert.deepEqual(await shown(bob.page, doomed), { text: 'delete me', edited: false, deleted: false });

    // Confirmed: a tombstone in place on both sides, its reactions and actions gone.
    await deleteViaMenu(alice.page, doomed);
    for (const page of [alice.page, bob.page]) {
      await eventually(() => shown(page, doomed), { text: 'message deleted', edited: false, deleted: true }, 'the deletion');
      assert.deepEqual(await reactionsOf(page, doomed), {});
      assert.ok(await messageItem(page, doomed).locator('.react-btn').isHidden());
      assert.ok(await messageItem(page, doomed).locator('.more-btn').isHidden());
      assert.deepEqual(await shown(page, keep), { text: 'keep me', edited: false, deleted: false });
    }
    // In place: still between the two others.
    assert.deepEqual((await messageStates(bob.page)).map((m) => m.text), ['keep me', 'message deleted', 'bob stays']);

    // A fresh page load gets the tombstone from the server's history.
    await bob.page.reload();
    await waitConnected(bob.page);
    await waitForMessage(bob.page, 'bob stays');
    assert.deepEqual(await shown(bob.page, doomed), { text: 'message deleted', edited: false, deleted: true });
    assert.deepEqual((await messageStates(bob.page)).map((m) => m.text), ['keep me', 'message deleted', 'bob stays']);
    assertClean(alice);
    assertClean(bob);
  });
});

test("the owner of a private room deletes someone else's message", { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const owner = await openClient(browser, server.baseUrl);
    const member = await openClient(browser, server.baseUrl);
    await signUp(owner, uniqueName('olga'));
    await signUp(member, uniqueName('mika'));
    const room = uniqueName('secret');
    await owner.page.fill('#room-input', room);
    await owner.page.click('#create-private-btn');
    await owner.page.waitForFunction((r) => window.__clubhouse.room() === r, room);
    await waitConnected(owner.page);
    await owner.page.fill('#member-input', member.username);
    await owner.page.click('#member-form button[type=submit]');
    await owner.page.locator('#member-list').getByText(member.username, { exact: true }).waitFor();
    await joinRoom(member, room);

    await send(owner, 'house rules');
    await send(member, 'something regrettable');
    const rules = await idOf(member.page, 'house rules');
    const regret = await idOf(owner.page, 'something regrettable');

    // The member can neither edit nor delete the owner's message; on their own: both.
    assert.ok(await messageItem(member.page, rules).locator('.more-btn').isHidden());
    assert.deepEqual(await openMessageMenu(member.page, regret), ['Edit', 'Delete…']);
    await member.page.keyboard.press('Escape');
    // The owner may delete the member's message but not edit it.
    assert.deepEqual(await openMessageMenu(owner.page, regret), ['Delete…']);
    await owner.page.keyboard.press('Escape');

    await openMessageMenu(owner.page, regret);
    await owner.page.locator(`#popup-${regret}`).getByRole('menuitem', { name: 'Delete' }).click();
    const confirm = messageItem(owner.page, regret).locator('.confirm');
    await confirm.getByText(`Delete this message by ${member.username}?`).waitFor({ state: 'visible' });
    await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
    for (const page of [owner.page, member.page]) {
      await eventually(() => shown(page, regret), { text: 'message deleted', edited: false, deleted: true }, "the owner's deletion");
      assert.deepEqual(await shown(page, rules), { text: 'house rules', edited: false, deleted: false });
    }
    assertClean(owner);
    assertClean(member);
  });
});

test('react and unreact: chips with counts on both sides, your own highlighted', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('room');
    const { alice, bob } = await twoUsersInRoom(browser, server.baseUrl, room);
    await send(alice, 'react to me');
    const id = await idOf(bob.page, 'react to me');
    await idOf(alice.page, 'react to me');
    assert.deepEqual(await reactionsOf(alice.page, id), {});

    const both = async (aliceSees, bobSees, what) => {
      await eventually(() => reactionsOf(alice.page, id), aliceSees, `${what} (Alice's view)`);
      await eventually(() => reactionsOf(bob.page, id), bobSees, `${what} (Bob's view)`);
    };

    // Bob reacts from the palette.
    await reactViaPalette(bob.page, id, '👍');
    await both({ '👍': { count: 1, mine: false } }, { '👍': { count: 1, mine: true } }, 'Bob’s 👍');

    // Alice clicks the chip: she joins in.
    await clickChip(alice.page, id, '👍');
    await both({ '👍': { count: 2, mine: true } }, { '👍': { count: 2, mine: true } }, 'Alice’s 👍 too');

    // Alice reacts from the keyboard: the palette opens on its first item, arrows move, Enter picks.
    await messageItem(alice.page, id).locator('.react-btn').focus();
    await alice.page.keyboard.press('Enter');
    const palette = alice.page.locator(`#popup-${id}`);
    await palette.waitFor({ state: 'visible' });
    assert.equal(await alice.page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'React with 👍');
    assert.equal(await palette.getByRole('menuitemcheckbox', { name: 'React with 👍' }).getAttribute('aria-checked'), 'true');
    assert.equal(await palette.getByRole('menuitemcheckbox', { name: 'React with 😂' }).getAttribute('aria-checked'), 'false');
    await alice.page.screenshot({ path: screenshotPath('reaction-palette.png') });
    await alice.page.keyboard.press('ArrowRight');
    await alice.page.keyboard.press('ArrowRight');
    await alice.page.keyboard.press('Enter');
    await palette.waitFor({ state: 'detached' });
    await both(
      { '👍': { count: 2, mine: true }, '😂': { count: 1, mine: true } },
      { '👍': { count: 2, mine: true }, '😂': { count: 1, mine: false } },
      'Alice’s 😂',
    );

    // Bob takes his 👍 back from the palette (it is checked there).
    await reactViaPalette(bob.page, id, '👍');
    await both(
      { '👍': { count: 1, mine: true }, '😂': { count: 1, mine: true } },
      { '👍': { count: 1, mine: false }, '😂': { count: 1, mine: false } },
      'Bob’s 👍 removed',
    );

    // Alice clicks her 👍 chip: the last 👍 goes, and so does the chip.
    await clickChip(alice.page, id, '👍');
    await both({ '😂': { count: 1, mine: true } }, { '😂': { count: 1, mine: false } }, 'Alice’s 👍 removed');
    await alice.page.screenshot({ path: screenshotPath('reactions.png') });

    // A fresh page load shows the same reactions, from the server.
    await bob.page.reload();
    await waitConnected(bob.page);
    await waitForMessage(bob.page, 'react to me');
    assert.deepEqual(await reactionsOf(bob.page, id), { '😂': { count: 1, mine: false } });
    assertClean(alice);
    assertClean(bob);
  });
});

test('"is typing…" shows to the others, not to the typist, and goes away', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('room');
    const { alice, bob } = await twoUsersInRoom(browser, server.baseUrl, room);
    const carol = await openClient(browser, server.baseUrl);
    await signUp(carol, uniqueName('carol'));
    await joinRoom(carol, room);
    const typing = (client) => client.page.locator('#typing').textContent();

    // Alice types: Bob and Carol see it, Alice does not.
    await alice.page.locator('#message-input').pressSequentially('hello th', { delay: 40 });
    await bob.page.locator('#typing').getByText(`${alice.username} is typing…`, { exact: true }).waitFor();
    const seenAt = Date.now();
    await carol.page.locator('#typing').getByText(`${alice.username} is typing…`, { exact: true }).waitFor();
    assert.equal(await typing(alice), '');
    // It stays a while (about 5 s) ...
    await bob.page.waitForTimeout(2000);
    assert.equal(await typing(bob), `${alice.username} is typing…`);
    // ... then goes away by itself once she stops.
    await bob.page.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: 10_000 });
    const lasted = Date.now() - seenAt;
    assert.ok(lasted >= 2500 && lasted <= 8000, `shown for ${lasted} ms`);
    assert.equal(await typing(alice), '');

    // Two people typing.
    await alice.page.locator('#message-input').pressSequentially('ere', { delay: 40 });
    await bob.page.locator('#typing').getByText(`${alice.username} is typing…`, { exact: true }).waitFor();
    await carol.page.locator('#message-input').pressSequentially('me too', { delay: 40 });
    await bob.page.locator('#typing').getByText(`${alice.username} and ${carol.username} are typing…`, { exact: true }).waitFor();
    await alice.page.locator('#typing').getByText(`${carol.username} is typing…`, { exact: true }).waitFor();
    assert.equal(await typing(carol), `${alice.username} is typing…`);

    // Sending the message ends Alice's "typing" at once for the others.
    await alice.page.press('#message-input', 'Enter');
    await waitForMessage(bob.page, 'hello there');
    await bob.page.locator('#typing').getByText(`${carol.username} is typing…`, { exact: true }).waitFor({ timeout: 2000 });
    assertClean(alice);
    assertClean(bob);
    assertClean(carol);
  });
});

// First sight: the login card says what Clubhouse is, sign up and log in are separate modes (Enter
// does the one visible action), a wrong password for a name new to this browser offers to sign up,
// the Room box's placeholder does not look like a room, a first room welcomes you, and focus lands
// in the message box after login and after a room switch.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  PASSWORD,
  assertClean,
  authErrorMatching,
  joinRoom,
  openClient,
  send,
  uniqueName,
  waitConnected,
  waitForMessage,
  withServerAndBrowser,
} from './helpers.mjs';

const visible = (page, selector) => page.locator(selector).isVisible();
const focusedId = (page) => page.evaluate(() => document.activeElement && document.activeElement.id);

async function waitFocus(page, id) {
  await page.waitForFunction((want) => document.activeElement && document.activeElement.id === want, id);
}

async function waitWelcome(page, title) {
  await page.locator('#welcome').waitFor({ state: 'visible' });
  await page.waitForFunction((t) => document.getElementById('welcome-title').textContent === t, title);
}

test('first sight: what it is, sign up or log in, a welcome, focus in the message box', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    // A newcomer's browser: the card opens on "Create your account", says what Clubhouse is,
    // and explains the username in words.
    const newcomer = await openClient(browser, server.baseUrl);
    const { page } = newcomer;
    assert.match(await page.locator('.tagline').textContent(), /^Clubhouse is .*chat/);
    assert.equal(await page.locator('#auth-title').textContent(), 'Create your account');
    assert.equal(await visible(page, '#signup-btn'), true);
    assert.equal(await visible(page, '#login-btn'), false, 'one primary action at a time');
    assert.equal(await page.getAttribute('#auth-password', 'autocomplete'), 'new-password');
    const hint = await page.locator('#username-hint').textContent();
    assert.match(hint, /3 to 32 characters: letters, digits, dots, dashes or\s+underscores/);
    assert.doesNotMatch(hint, /_ \. -/);
    assert.equal(await focusedId(page), 'auth-username', 'the card starts in the username box');

    // Enter signs up (the visible action); focus then lands in the message box of the lobby,
    // which greets the newcomer instead of an empty grey box.
    const name = uniqueName('nina');
    await page.fill('#auth-username', name);
    await page.fill('#auth-password', PASSWORD);
    await page.press('#auth-password', 'Enter');
    await page.locator('#chat-view').waitFor({ state: 'visible' });
    newcomer.username = name;
    await waitConnected(page);
    await waitFocus(page, 'message-input');
    await waitWelcome(page, `Welcome to #lobby, ${name}!`);
    assert.match(await page.locator('#welcome-text').textContent(), /Say hello/);

    // The Room box's placeholder reads as a prompt, not as a room name already filled in.
    const placeholder = await page.getAttribute('#room-input', 'placeholder');
    assert.doesNotMatch(placeholder, /^[A-Za-z0-9_-]{1,64}$/, `placeholder "${placeholder}" looks like a room name`);
    assert.match(await page.locator('label[for="room-input"]').textContent(), /room/i);

    // A room switch moves the focus to the message box too; a new room welcomes until its first message.
    const room = uniqueName('room');
    await page.focus('#room-input');
    await joinRoom(newcomer, room);
    await waitFocus(page, 'message-input');
    await waitWelcome(page, `Welcome to #${room}, ${name}!`);

    // Someone else joins and talks: both see the conversation, nobody sees the welcome any more.
    const friend = await openClient(browser, server.baseUrl);
    const friendName = uniqueName('femi');
    await friend.page.fill('#auth-username', friendName);
    await friend.page.fill('#auth-password', PASSWORD);
    await friend.page.press('#auth-username', 'Enter');
    await friend.page.locator('#chat-view').waitFor({ state: 'visible' });
    friend.username = friendName;
    await joinRoom(friend, room);
    await send(friend, 'hello, first!');
    await waitForMessage(page, 'hello, first!');
    assert.equal(await visible(page, '#welcome'), false);
    assert.equal(await visible(friend.page, '#welcome'), false);

    // Log out: this browser knows the name now, so the card opens on "Log in", and Enter logs in.
    await page.click('#logout');
    await page.locator('#auth-view').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#auth-title').textContent(), 'Log in');
    assert.equal(await visible(page, '#login-btn'), true);
    assert.equal(await visible(page, '#signup-btn'), false);
    assert.equal(await page.getAttribute('#auth-password', 'autocomplete'), 'current-password');
    // A wrong password for a name this browser knows: no offer to sign up.
    await page.fill('#auth-username', name);
    await page.fill('#auth-password', 'not the password');
    await page.press('#auth-password', 'Enter');
    await authErrorMatching(page, /Wrong username or password/);
    assert.equal(await page.locator('#signup-offer').count(), 0);
    await page.fill('#auth-password', PASSWORD);
    await page.press('#auth-password', 'Enter');
    await page.locator('#chat-view').waitFor({ state: 'visible' });
    await waitFocus(page, 'message-input');

    // The switch between the two modes is one click, and keeps what was typed.
    const other = await openClient(browser, server.baseUrl);
    const op = other.page;
    await op.click('#auth-switch');
    assert.equal(await op.locator('#auth-title').textContent(), 'Log in');
    await op.click('#auth-switch');
    assert.equal(await op.locator('#auth-title').textContent(), 'Create your account');

    // A newcomer who tries to log in: "Wrong username or password", and an offer to sign up
    // with that name, which works in one click.
    await op.click('#auth-switch');
    const fresh = uniqueName('olu');
    await op.fill('#auth-username', fresh);
    await op.fill('#auth-password', PASSWORD);
    await op.press('#auth-password', 'Enter');
    const error = await authErrorMatching(op, /Wrong username or password/);
    assert.match(error, /New here\? Sign up as “olu_[0-9a-f]+” with this password\./);
    await op.click('#signup-offer');
    await op.locator('#chat-view').waitFor({ state: 'visible' });
    await waitConnected(op);
    assert.equal(await op.locator('#whoami').textContent(), fresh);

    assertClean(newcomer);
    assertClean(friend);
    assertClean(other);
  });
});

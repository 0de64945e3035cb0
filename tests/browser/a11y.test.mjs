// WCAG 2.2 AA: axe-core (pinned in package.json) on every screen with zero violations — login,
// chat between two people, the welcome of an empty room, a private room (owner and refused
// visitor), settings, the People panel, a phone at 375×812 and the dark colour scheme. Also what
// axe cannot judge alone: focus after login and room switches (and not taken from a box being typed in), the message log as a focusable,
// scrollable live region, and the contrast of the timestamps in your own bubbles.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RELAXED_LIMITS, startServer } from './server.mjs';
import {
  PASSWORD,
  PHONE,
  assertAccessible,
  assertClean,
  authErrorMatching,
  joinRoom,
  openClient,
  send,
  signUp,
  submitAuth,
  uniqueName,
  waitConnected,
  waitForMessage,
  waitOnline,
  withServerAndBrowser,
} from './helpers.mjs';

/** WCAG contrast ratio of two computed colours ("rgb(r, g, b)"). */
function contrast(a, b) {
  const lum = (css) => {
    const [r, g, bl] = css.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

const focusedId = (page) => page.evaluate(() => document.activeElement && document.activeElement.id);

async function waitFocus(page, id) {
  await page.waitForFunction((want) => document.activeElement && document.activeElement.id === want, id);
}

async function ownTimestampContrast(page) {
  const colours = await page.evaluate(() => {
    const li = document.querySelector('#messages li.msg.mine');
    return { fg: getComputedStyle(li.querySelector('time')).color, bg: getComputedStyle(li).backgroundColor };
  });
  return contrast(colours.fg, colours.bg);
}

test('axe-core finds no WCAG 2.2 AA violation on any screen; focus, log region, contrast', { timeout: 300_000 }, async () => {
  await withServerAndBrowser(startServer, { vars: RELAXED_LIMITS }, async ({ server, browser }) => {
    // Login: both modes, and with an error (and the offer to sign up) showing.
    const alice = await openClient(browser, server.baseUrl);
    await assertAccessible(alice.page, 'the login card (sign up)');
    await alice.page.click('#auth-switch');
    await assertAccessible(alice.page, 'the login card (log in)');
    await submitAuth(alice.page, uniqueName('nobody'), PASSWORD, '#login-btn');
    await authErrorMatching(alice.page, /Wrong username or password/);
    await assertAccessible(alice.page, 'the login card with an error');

    // After login focus is in the message box; the empty lobby's welcome passes too.
    await signUp(alice, uniqueName('alice'));
    await waitConnected(alice.page);
    await waitFocus(alice.page, 'message-input');
    await alice.page.locator('#welcome').waitFor({ state: 'visible' });
    await assertAccessible(alice.page, 'the welcome of an empty room');

    // Chat between two people, with a group, a link, a notice and a day separator.
    // Typing a room name while the first room still connects: that box keeps the focus and the
    // text (the room's details are held back until the typing is done).
    const bob = await openClient(browser, server.baseUrl);
    let release;
    const held = new Promise((ok) => {
      release = ok;
    });
    const lobbyInfo = /\/rooms\/lobby$/;
    await bob.page.route(lobbyInfo, async (route) => {
      await held;
      await route.continue();
    });
    bob.username = uniqueName('bob');
    await submitAuth(bob.page, bob.username, PASSWORD, '#signup-btn');
    await bob.page.locator('#chat-view').waitFor({ state: 'visible' });
    await bob.page.focus('#room-input');
    await bob.page.keyboard.type('half-typed');
    release();
    await waitConnected(bob.page);
    await bob.page.unroute(lobbyInfo);
    assert.equal(await focusedId(bob.page), 'room-input', 'connecting took the focus from the room box');
    assert.equal(await bob.page.inputValue('#room-input'), 'half-typed');
    await bob.page.fill('#room-input', '');
    const room = uniqueName('room');
    await joinRoom(alice, room);
    await waitFocus(alice.page, 'message-input');
    await joinRoom(bob, room);
    await waitOnline(alice.page, bob.username);
    for (let i = 0; i < 24; i += 1) await send(alice, `line ${i}: https://example.com/${i}`);
    await send(bob, 'Got them all, thanks!');
    await waitForMessage(alice.page, 'Got them all, thanks!');
    await assertAccessible(alice.page, 'the chat (desktop)');
    await assertAccessible(bob.page, 'the chat, the other person (desktop)');

    // Own timestamps: at least 4.5:1 on the own bubble's colour.
    const ratio = await ownTimestampContrast(alice.page);
    assert.ok(ratio >= 4.5, `own-bubble timestamp contrast ${ratio.toFixed(2)}:1 is under 4.5:1`);

    // The log: a labelled, focusable live region that the keyboard scrolls.
    const log = await alice.page.evaluate(() => {
      const node = document.getElementById('log');
      return { role: node.getAttribute('role'), live: node.getAttribute('aria-live'), tab: node.tabIndex, label: node.getAttribute('aria-label') };
    });
    assert.deepEqual(log, { role: 'log', live: 'polite', tab: 0, label: 'Messages' });
    await alice.page.focus('#log');
    const bottom = await alice.page.evaluate(() => document.getElementById('log').scrollTop);
    assert.ok(bottom > 0, 'enough messages to scroll');
    await alice.page.keyboard.press('PageUp');
    await alice.page.waitForFunction((b) => document.getElementById('log').scrollTop < b, bottom);
    await alice.page.keyboard.press('End');
    await alice.page.waitForFunction((b) => document.getElementById('log').scrollTop >= b - 1, bottom);
    // In the Tab order the log comes right after the rooms' column (before its messages' buttons).
    await alice.page.evaluate(() => {
      const inNav = [...document.querySelectorAll('nav.rooms a[href], nav.rooms button, nav.rooms input')];
      inNav.filter((n) => n.offsetParent !== null && !n.disabled).pop().focus();
    });
    await alice.page.keyboard.press('Tab');
    assert.equal(await focusedId(alice.page), 'log', 'Tab from the rooms column does not reach the log');

    // "New messages ↓" showing.
    await alice.page.evaluate(() => {
      document.getElementById('log').scrollTop = 0;
    });
    await send(bob, 'Look down here');
    await alice.page.locator('#jump-new').waitFor({ state: 'visible' });
    await assertAccessible(alice.page, 'the chat with "new messages" showing');

    // A private room: the owner's view with its members, a member's, and a refused visitor's.
    const secret = uniqueName('secret');
    await alice.page.fill('#room-input', secret);
    await alice.page.click('#create-private-btn');
    await alice.page.waitForFunction((r) => window.__clubhouse.room() === r, secret);
    await waitConnected(alice.page);
    await alice.page.locator('#members-panel').waitFor({ state: 'visible' });
    await alice.page.fill('#member-input', bob.username);
    await alice.page.click('#member-form button[type="submit"]');
    await alice.page.waitForFunction(
      (b) => [...document.querySelectorAll('#member-list li')].some((li) => li.textContent.startsWith(b)),
      bob.username,
    );
    await send(alice, 'Only the two of us here.');
    await assertAccessible(alice.page, 'a private room (owner)');
    await joinRoom(bob, secret);
    await waitForMessage(bob.page, 'Only the two of us here.');
    await assertAccessible(bob.page, 'a private room (member)');
    const carol = await openClient(browser, server.baseUrl);
    await signUp(carol, uniqueName('carol'));
    await carol.page.fill('#room-input', secret);
    await carol.page.click('#join-btn');
    await carol.page.locator('#banner').waitFor({ state: 'visible' });
    await assertAccessible(carol.page, 'a private room (refused)');

    // Settings, with the delete confirmation open.
    await alice.page.click('#open-settings');
    await alice.page.locator('#settings-view').waitFor({ state: 'visible' });
    await assertAccessible(alice.page, 'settings');
    await alice.page.click('#delete-start');
    await alice.page.locator('#delete-confirm').waitFor({ state: 'visible' });
    await assertAccessible(alice.page, 'settings with the delete confirmation');
    await alice.page.click('#delete-cancel');
    await alice.page.click('#close-settings');

    // The dark colour scheme.
    await bob.page.emulateMedia({ colorScheme: 'dark' });
    await joinRoom(bob, room);
    await waitForMessage(bob.page, 'Look down here');
    await assertAccessible(bob.page, 'the chat in the dark colour scheme');
    assert.ok((await ownTimestampContrast(bob.page)) >= 4.5, 'own-bubble timestamps in the dark scheme');

    // A phone at 375×812: login, chat, the People panel open.
    const phone = await openClient(browser, server.baseUrl, { viewport: PHONE, isMobile: true });
    await assertAccessible(phone.page, 'the login card (phone)');
    await signUp(phone, uniqueName('pia'));
    await joinRoom(phone, room);
    await waitFocus(phone.page, 'message-input');
    await send(phone, 'Hello from a phone');
    await waitForMessage(phone.page, 'Look down here');
    await assertAccessible(phone.page, 'the chat (phone)');
    await phone.page.click('#toggle-side');
    await phone.page.locator('#side').waitFor({ state: 'visible' });
    await assertAccessible(phone.page, 'the People panel (phone)');

    for (const client of [alice, bob, carol, phone]) assertClean(client);
  });
});

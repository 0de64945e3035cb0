// Shared helpers of the browser tests: Chromium, users signing up through the UI, reading the view.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO_ROOT } from './server.mjs';

export const OUTPUT_DIR = path.join(REPO_ROOT, 'test-output');
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 375, height: 812 };

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

export function chromiumPath() {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean);
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new Error('Chromium not found at /usr/bin/chromium: apt-get install -y chromium (or WITH_BROWSER=1 bash scripts/setup)');
  return found;
}

export function launchBrowser() {
  return chromium.launch({ executablePath: chromiumPath(), args: CHROMIUM_ARGS });
}

export function uniqueName(prefix) {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

export const PASSWORD = 'correct horse battery staple';

/**
 * A fresh browser context with one page on the app. Records page errors, dialogs and CSP
 * violations so tests can assert there were none. Other options (locale, timezoneId, colorScheme)
 * go to the context.
 */
export async function openClient(browser, baseUrl, { viewport = DESKTOP, isMobile = false, ...contextOptions } = {}) {
  const context = await browser.newContext({ viewport, isMobile, hasTouch: isMobile, deviceScaleFactor: 1, ...contextOptions });
  const page = await context.newPage();
  const client = { context, page, errors: [], dialogs: [], cspViolations: [], sockets: [] };
  page.on('pageerror', (e) => client.errors.push(String(e)));
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content Security Policy/i.test(text)) client.cspViolations.push(text);
  });
  page.on('dialog', async (dialog) => {
    client.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss().catch(() => {});
  });
  page.on('websocket', (ws) => client.sockets.push(ws.url()));
  await page.goto(`${baseUrl}/`);
  await page.locator('#auth-form').waitFor({ state: 'visible' });
  return client;
}

/** The login card shows one action at a time ("Create your account" or "Log in"): switches to the
 *  one of `button` if the other is showing. */
export async function chooseAuthMode(page, button) {
  const mode = button === '#signup-btn' ? 'signup' : 'login';
  // The card is shown (and its mode chosen) once the page has booted.
  await page.locator('#auth-form').waitFor({ state: 'visible' });
  if ((await page.getAttribute('#auth-form', 'data-mode')) !== mode) await page.click('#auth-switch');
  await page.locator(button).waitFor({ state: 'visible' });
}

/** Fills the login card and clicks `button` (#signup-btn or #login-btn), in its mode. */
export async function submitAuth(page, username, password, button) {
  await chooseAuthMode(page, button);
  await page.fill('#auth-username', username);
  await page.fill('#auth-password', password);
  await page.click(button);
}

/** Signs up through the form; ends in the chat view, connected to the first room (a test that
 *  clicks before then aims at a page still laying that room out). */
export async function signUp(client, username, password = PASSWORD) {
  await submitAuth(client.page, username, password, '#signup-btn');
  await client.page.locator('#chat-view').waitFor({ state: 'visible' });
  client.username = username;
  await waitConnected(client.page);
}

export async function logIn(client, username, password = PASSWORD) {
  await submitAuth(client.page, username, password, '#login-btn');
  await client.page.locator('#chat-view').waitFor({ state: 'visible' });
  client.username = username;
  await waitConnected(client.page);
}

/** Waits until the auth form shows an error matching `re`; returns its text. */
export async function authErrorMatching(page, re) {
  const node = page.locator('#auth-error');
  await node.waitFor({ state: 'visible' });
  await page.waitForFunction(
    ([source, flags]) => new RegExp(source, flags).test(document.getElementById('auth-error').textContent),
    [re.source, re.flags],
  );
  return node.textContent();
}

/** Alice and Bob, each in a browser context of their own, signed up and in `room`. */
export async function twoUsersInRoom(browser, baseUrl, room) {
  const alice = await openClient(browser, baseUrl);
  const bob = await openClient(browser, baseUrl);
  await signUp(alice, uniqueName('alice'));
  await signUp(bob, uniqueName('bob'));
  await joinRoom(alice, room);
  await joinRoom(bob, room);
  return { alice, bob };
}

export async function joinRoom(client, room) {
  const { page } = client;
  await page.fill('#room-input', room);
  // Enter submits with the form's first button (Join). A pointer click would aim at coordinates,
  // and right after a login the page is still laying out its first room: a shift between aiming
  // and clicking can land the click elsewhere.
  await page.press('#room-input', 'Enter');
  await page.waitForFunction((r) => window.__clubhouse.room() === r, room);
  await waitConnected(page);
}

export async function waitConnected(page, timeout = 15_000) {
  await page.waitForFunction(() => window.__clubhouse.status() === 'open', null, { timeout });
}

export async function waitStatus(page, status, timeout = 15_000) {
  await page.waitForFunction((s) => window.__clubhouse.status() === s, status, { timeout });
}

/** Types into the composer and presses Enter. */
export async function send(client, text) {
  const { page } = client;
  await page.fill('#message-input', text);
  await page.press('#message-input', 'Enter');
  await page.waitForFunction(() => document.getElementById('message-input').value === '');
}

/** The messages on screen, top to bottom: [{id, user, text}]. */
export function messages(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#messages li.msg')].map((li) => ({
      id: Number(li.dataset.id),
      user: li.querySelector('.who').textContent,
      text: li.querySelector('.text').textContent,
    })),
  );
}

export function notices(page) {
  return page.evaluate(() => [...document.querySelectorAll('#messages li.notice')].map((li) => li.textContent));
}

export function onlineUsers(page) {
  return page.evaluate(() => [...document.querySelectorAll('#online-list li')].map((li) => li.textContent.replace(/ \(you\)$/, '')));
}

/** Waits until a message with exactly this text is on screen. */
export async function waitForMessage(page, text, timeout = 15_000) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('#messages li.msg .text')].some((n) => n.textContent === t),
    text,
    { timeout },
  );
}

export async function waitForNotice(page, text, timeout = 15_000) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('#messages li.notice')].some((n) => n.textContent.includes(t)),
    text,
    { timeout },
  );
}

export async function waitOnline(page, username, present = true, timeout = 15_000) {
  await page.waitForFunction(
    ([u, want]) =>
      [...document.querySelectorAll('#online-list li')].some((li) => li.textContent.replace(/ \(you\)$/, '') === u) === want,
    [username, present],
    { timeout },
  );
}

/** Ids strictly increasing (so: unique and in order) and the DOM agrees with the client's index. */
export async function assertOrderedUnique(page) {
  const list = await messages(page);
  for (let i = 1; i < list.length; i += 1) {
    assert.ok(list[i].id > list[i - 1].id, `message ids out of order or duplicated at ${i}: ${list[i - 1].id} then ${list[i].id}`);
  }
  const index = await page.evaluate(() => window.__clubhouse.messageIds());
  assert.deepEqual(index, list.map((m) => m.id));
  return list;
}

/** Asserts the client saw no script error, no dialog and no CSP violation. */
export function assertClean(client) {
  assert.deepEqual(client.errors, [], `page errors: ${client.errors.join('\n')}`);
  assert.deepEqual(client.dialogs, [], `dialogs fired: ${client.dialogs.join('\n')}`);
  assert.deepEqual(client.cspViolations, [], `CSP violations: ${client.cspViolations.join('\n')}`);
}

export function screenshotPath(name) {
  fs.mkdirSync(OUTPUT_DIR, { recursive: true });
  return path.join(OUTPUT_DIR, name);
}

/** The token of a signed-in page (from its sessionStorage), for direct API calls in tests. */
export function tokenOf(page) {
  return page.evaluate(() => sessionStorage.getItem('clubhouse.token'));
}

/**
 * Runs `fn(ctx)` with a server and a browser, cleaning both up however it ends. On failure the
 * last lines of the server log are attached to the error.
 */
export async function withServerAndBrowser(startServer, options, fn) {
  const server = await startServer(options);
  let browser;
  let failed = true;
  try {
    browser = await launchBrowser();
    await fn({ server, browser });
    failed = false;
  } catch (e) {
    const tail = server.log().split('\n').slice(-40).join('\n');
    e.message = `${e.message}\n--- last lines of ${server.logPath} ---\n${tail}`;
    throw e;
  } finally {
    if (browser) await browser.close().catch(() => {});
    await server.stop().catch(() => {});
    if (!failed) server.cleanup();
  }
}

// ------------------------------------------------------------------------------------------
// Acting on messages (edit, delete, reactions)
// ------------------------------------------------------------------------------------------

/**
 * Every message on screen with its state, top to bottom:
 * [{id, user, text, edited, deleted, reactions: {emoji: {count, mine}}}].
 */
export function messageStates(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#messages li.msg')].map((li) => ({
      id: Number(li.dataset.id),
      user: li.querySelector('.who').textContent,
      text: li.querySelector('.text').textContent,
      edited: !li.querySelector('.edited').hidden,
      deleted: li.classList.contains('deleted'),
      reactions: Object.fromEntries(
        [...li.querySelectorAll('.reactions .chip')].map((c) => [
          c.dataset.emoji,
          { count: Number(c.querySelector('.count').textContent), mine: c.getAttribute('aria-pressed') === 'true' },
        ]),
      ),
    })),
  );
}

export async function messageState(page, id) {
  return (await messageStates(page)).find((m) => m.id === id);
}

/** The id of the (single) message on screen with exactly this text, once it is there. */
export async function idOf(page, text) {
  await waitForMessage(page, text);
  const found = (await messages(page)).filter((m) => m.text === text);
  assert.equal(found.length, 1, `"${text}" is on screen ${found.length} times`);
  return found[0].id;
}

export function messageItem(page, id) {
  return page.locator(`#messages li.msg[data-id="${id}"]`);
}

/** Polls `fn` until its value deep-equals `expected` (then returns it), or fails with the last value. */
export async function eventually(fn, expected, what = 'value', timeout = 15_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    try {
      assert.deepEqual(last, expected);
      return last;
    } catch (e) {
      if (Date.now() > deadline) {
        e.message = `${what} never became the expected one within ${timeout} ms:\n${e.message}`;
        throw e;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Opens a message's Edit/Delete menu; returns the names of its items. */
export async function openMessageMenu(page, id) {
  await messageItem(page, id).locator('.more-btn').click();
  const menu = page.locator(`#popup-${id}[role=menu]`);
  await menu.waitFor({ state: 'visible' });
  return menu.getByRole('menuitem').allTextContents();
}

/** Edits a message from its menu: Edit, replace the text, Enter. */
export async function editViaMenu(page, id, text) {
  await openMessageMenu(page, id);
  await page.locator(`#popup-${id}`).getByRole('menuitem', { name: 'Edit' }).click();
  const box = messageItem(page, id).locator('.editor textarea');
  await box.waitFor({ state: 'visible' });
  await box.fill(text);
  await box.press('Enter');
  await box.waitFor({ state: 'detached' });
}

/** Deletes a message from its menu, confirming. */
export async function deleteViaMenu(page, id) {
  await openMessageMenu(page, id);
  await page.locator(`#popup-${id}`).getByRole('menuitem', { name: 'Delete' }).click();
  const confirm = messageItem(page, id).locator('.confirm');
  await confirm.waitFor({ state: 'visible' });
  await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
  await confirm.waitFor({ state: 'detached' });
}

/** Toggles my `emoji` on a message from its reaction palette. */
export async function reactViaPalette(page, id, emoji) {
  await messageItem(page, id).locator('.react-btn').click();
  const palette = page.locator(`#popup-${id}[role=menu]`);
  await palette.waitFor({ state: 'visible' });
  const item = palette.getByRole('menuitemcheckbox', { name: `React with ${emoji}` });
  const wasMine = (await item.getAttribute('aria-checked')) === 'true';
  await item.click();
  await palette.waitFor({ state: 'detached' });
  // Returns once the room's echo is shown, so a snapshot taken next includes it.
  const mineChip = messageItem(page, id).locator(`.reactions .chip[data-emoji="${emoji}"][aria-pressed="true"]`);
  await mineChip.waitFor({ state: wasMine ? 'detached' : 'visible' });
}

/** Clicks the chip of `emoji` under a message (toggles my reaction). */
export async function clickChip(page, id, emoji) {
  const chip = messageItem(page, id).locator(`.reactions .chip[data-emoji="${emoji}"]`);
  const wasMine = (await chip.getAttribute('aria-pressed')) === 'true';
  await chip.click();
  // Returns once the room's echo is shown, as reactViaPalette does.
  const mineChip = messageItem(page, id).locator(`.reactions .chip[data-emoji="${emoji}"][aria-pressed="true"]`);
  await mineChip.waitFor({ state: wasMine ? 'detached' : 'visible' });
}

// ------------------------------------------------------------------------------------------
// Accessibility: axe-core (pinned in package.json) on the page as it is
// ------------------------------------------------------------------------------------------

/** The WCAG 2.0, 2.1 and 2.2 A and AA rules. */
export const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];
const AXE_SOURCE = path.join(REPO_ROOT, 'node_modules', 'axe-core', 'axe.min.js');

/** The sidebar entry of `room` as shown, or null: its label, unread badge, last message line, and
 *  access mark (`refused`/`added`, null for none) with the mark's text. */
export function sidebarEntry(page, room) {
  return page.evaluate((r) => {
    const li = document.querySelector(`#room-list li[data-room="${r}"]`);
    if (!li) return null;
    const text = (sel) => li.querySelector(sel)?.textContent ?? '';
    return {
      label: text('.room-name'),
      unread: text('.unread'),
      last: text('.last'),
      access: li.dataset.access ?? null,
      note: text('.access'),
    };
  }, room);
}

/**
 * Runs axe-core on the page and answers its violations as readable lines ([] when there are none).
 * The page's CSP allows no inline or foreign script, so axe's source is evaluated through the
 * DevTools protocol (Playwright's evaluate), which the CSP does not govern; the page itself is
 * unchanged and no CSP is bypassed for the app.
 */
export async function axeViolations(page) {
  const loaded = await page.evaluate(() => typeof window.axe === 'object');
  if (!loaded) await page.evaluate(fs.readFileSync(AXE_SOURCE, 'utf8'));
  const violations = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] }).then((r) => r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary.replace(/\s+/g, ' ')}`),
    }))),
    AXE_TAGS,
  );
  return violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.join('\n    ')}`);
}

/** Asserts axe-core finds no WCAG 2.2 A/AA violation on the page's current screen. */
export async function assertAccessible(page, screen) {
  const found = await axeViolations(page);
  assert.deepEqual(found, [], `axe-core on ${screen}:\n${found.join('\n')}`);
}

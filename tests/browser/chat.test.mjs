// Two people chat in a real Chromium: sign up, join a room, exchange messages, see each other's
// presence; markup in a message stays text; screenshots at desktop and phone width.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  PHONE,
  assertClean,
  assertOrderedUnique,
  joinRoom,
  logIn,
  messages,
  onlineUsers,
  openClient,
  screenshotPath,
  send,
  signUp,
  uniqueName,
  waitForMessage,
  waitForNotice,
  waitOnline,
  withServerAndBrowser,
  twoUsersInRoom,
} from './helpers.mjs';

test('two users chat, see presence, XSS stays text, screenshots', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    // The page comes with its security headers (src/api/page.rs).
    const res = await fetch(`${server.baseUrl}/`);
    const csp = res.headers.get('content-security-policy') || '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');

    const room = uniqueName('room');
    const { alice, bob } = await twoUsersInRoom(browser, server.baseUrl, room);

    // The token travels in Sec-WebSocket-Protocol, never in the URL (on servers that support it).
    const transport = await alice.page.evaluate(() => window.__clubhouse.transport());
    assert.ok(['bearer', 'query'].includes(transport), transport);
    if (transport === 'bearer') {
      for (const url of [...alice.sockets, ...bob.sockets]) assert.ok(!/token=/.test(url), `token in a WebSocket URL: ${url}`);
    }

    // Presence: each sees the other online; alice got a join notice for bob.
    await waitOnline(alice.page, bob.username);
    await waitOnline(bob.page, alice.username);
    await waitForNotice(alice.page, `${bob.username} joined`);
    assert.deepEqual((await onlineUsers(alice.page)).sort(), [alice.username, bob.username].sort());

    // Messages both ways (Enter sends), seen by both, in the same order.
    await send(alice, 'Hello Bob — ça va ?');
    await waitForMessage(bob.page, 'Hello Bob — ça va ?');
    await send(bob, 'Hi Alice, good to see you.');
    await waitForMessage(alice.page, 'Hi Alice, good to see you.');
    await send(alice, 'Two lines,\nstill one message.');
    await waitForMessage(bob.page, 'Two lines,\nstill one message.');

    // XSS payloads render as text: no dialog, no injected element, the literal text is visible.
    const payloads = [
      '<script>alert("xss-script")</script>',
      '<img src=x onerror="alert(\'xss-img\')">',
      '<svg onload=alert(1)><b>bold?</b></svg>',
    ];
    for (const p of payloads) await send(alice, p);
    for (const p of payloads) {
      await waitForMessage(bob.page, p);
      await waitForMessage(alice.page, p);
    }
    for (const client of [alice, bob]) {
      const injected = await client.page.evaluate(() => document.querySelectorAll('#messages script, #messages img, #messages svg, #messages b').length);
      assert.equal(injected, 0, 'markup from a message became an element');
      for (const p of payloads) {
        await client.page.getByText(p, { exact: true }).waitFor({ state: 'visible' });
      }
      assert.deepEqual(client.dialogs, []);
    }

    const aliceView = await assertOrderedUnique(alice.page);
    const bobView = await assertOrderedUnique(bob.page);
    assert.deepEqual(aliceView, bobView);
    assert.equal(aliceView.length, 6);

    // Desktop screenshot for the README.
    await alice.page.screenshot({ path: screenshotPath('chat.png') });

    // Phone width: bob logs in again on a phone; the layout fits 375 px with no sideways scroll.
    const phone = await openClient(browser, server.baseUrl, { viewport: PHONE, isMobile: true });
    await logIn(phone, bob.username);
    await joinRoom(phone, room);
    await waitForMessage(phone.page, payloads[2]);
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone screen`);
    assert.ok(await phone.page.locator('#message-input').isVisible());
    assert.ok(await phone.page.locator('#send-btn').isVisible());
    await phone.page.screenshot({ path: screenshotPath('chat-phone.png') });
    assert.deepEqual((await messages(phone.page)).map((m) => m.id), aliceView.map((m) => m.id));
    await phone.context.close();

    // Leave: bob closes his tab; alice sees him go.
    await bob.context.close();
    await waitForNotice(alice.page, `${bob.username} left`);
    await waitOnline(alice.page, bob.username, false);

    assertClean(alice);
    assertClean(bob);
    assertClean(phone);
  });
});

test('falls back to ?token= when the server lacks the bearer subprotocol', { timeout: 120_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const old = await openClient(browser, server.baseUrl);
    // Play an older server: a handshake that asks for subprotocols fails (as when the server does
    // not answer "bearer"); plain handshakes go through.
    await old.page.addInitScript(() => {
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(url, protocols) {
          if (protocols && protocols.length) {
            const u = new URL(url);
            u.pathname = '/ws-refused';
            super(u.href);
          } else {
            super(url);
          }
        }
      };
    });
    await old.page.reload();
    const user = uniqueName('olde');
    await signUp(old, user);
    const room = uniqueName('room');
    await joinRoom(old, room);
    assert.equal(await old.page.evaluate(() => window.__clubhouse.transport()), 'query');
    assert.ok(old.sockets.some((u) => /[?&]token=/.test(u)));
    await send(old, 'over the fallback');
    await waitForMessage(old.page, 'over the fallback');
    assert.deepEqual(old.errors, []);
    assert.deepEqual(old.dialogs, []);
  });
});

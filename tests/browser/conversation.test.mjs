// A conversation that reads well, between two people: consecutive messages of one person grouped
// (name and time once), a day separator, local times without a leading zero and local tooltips,
// bubbles of one width rule with your own on the right in your colour (also on a phone), web links
// clickable but never markup, and "new messages ↓" when scrolled up.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RELAXED_LIMITS, startServer } from './server.mjs';
import {
  PHONE,
  assertClean,
  idOf,
  joinRoom,
  openClient,
  send,
  signUp,
  uniqueName,
  waitForMessage,
  withServerAndBrowser,
} from './helpers.mjs';

// Far from UTC, so a tooltip in UTC or the server's zone cannot pass for local time.
const TIME_ZONE = 'Asia/Kolkata';

/** A reader in TIME_ZONE with an en-US locale. */
function openLocal(browser, baseUrl, options = {}) {
  return openClient(browser, baseUrl, { locale: 'en-US', timezoneId: TIME_ZONE, ...options });
}

/** Each message on screen: who, whether its name line shows, whether it continues a group. */
function layout(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#messages li.msg')].map((li) => {
      const who = li.querySelector('.who');
      return {
        text: li.querySelector('.text').textContent,
        who: who.textContent,
        nameShown: who.getBoundingClientRect().width > 2,
        cont: li.classList.contains('cont'),
      };
    }),
  );
}

test('grouping, day separator, local times, bubbles, links, new messages button', { timeout: 240_000 }, async () => {
  await withServerAndBrowser(startServer, { vars: RELAXED_LIMITS }, async ({ server, browser }) => {
    const room = uniqueName('room');
    const alice = await openLocal(browser, server.baseUrl);
    const bob = await openLocal(browser, server.baseUrl);
    await signUp(alice, uniqueName('alice'));
    await signUp(bob, uniqueName('bob'));
    await joinRoom(alice, room);
    await joinRoom(bob, room);

    // Three from alice, one from bob, one from alice: groups of 3, 1 and 1.
    for (const text of ['one', 'two', 'three']) await send(alice, text);
    await waitForMessage(bob.page, 'three');
    await send(bob, 'four');
    await waitForMessage(alice.page, 'four');
    await send(alice, 'five');
    await waitForMessage(bob.page, 'five');
    for (const client of [alice, bob]) {
      const rows = await layout(client.page);
      assert.deepEqual(rows.map((r) => [r.text, r.cont, r.nameShown]), [
        ['one', false, true],
        ['two', true, false],
        ['three', true, false],
        ['four', false, true],
        ['five', false, true],
      ]);
      // The name stays in every message for screen readers.
      assert.deepEqual(rows.map((r) => r.who), [alice.username, alice.username, alice.username, bob.username, alice.username]);
      // One day separator, "Today", right before the first message.
      const days = await client.page.evaluate(() =>
        [...document.querySelectorAll('#messages li.day')].map((d) => [d.textContent, d.nextElementSibling.classList.contains('msg')]),
      );
      assert.deepEqual(days, [['Today', true]]);
    }

    // Times: "4:36 PM", never "04:36 PM"; the tooltip is the full local date and time.
    const times = await bob.page.evaluate(() =>
      [...document.querySelectorAll('#messages li.msg time')].map((t) => ({ text: t.textContent, title: t.title, iso: t.dateTime })),
    );
    for (const t of times) {
      assert.match(t.text, /^[1-9]\d?:\d{2}\s?[AP]M$/, `time "${t.text}"`);
      const local = new Date(t.iso).toLocaleString('en-US', { dateStyle: 'full', timeStyle: 'short', timeZone: TIME_ZONE });
      assert.equal(t.title, local, 'tooltip in local time');
      const hour = new Date(t.iso).toLocaleTimeString('en-US', { hour: 'numeric', minute: '2-digit', timeZone: TIME_ZONE });
      assert.equal(t.text, hour);
    }

    // Bubbles: one width rule for all; alice's own on the right in her colour, bob's on the left.
    const bubbles = await alice.page.evaluate(() => {
      const log = document.getElementById('log').getBoundingClientRect();
      return [...document.querySelectorAll('#messages li.msg')].map((li) => {
        const box = li.getBoundingClientRect();
        const css = getComputedStyle(li);
        return {
          mine: li.classList.contains('mine'),
          left: box.left - log.left,
          right: log.right - box.right,
          width: box.width,
          logWidth: log.width,
          bg: css.backgroundColor,
          maxWidth: css.maxWidth,
          minWidth: css.minWidth,
        };
      });
    });
    assert.deepEqual(bubbles.map((b) => b.mine), [true, true, true, false, true]);
    assert.equal(new Set(bubbles.map((b) => `${b.minWidth}/${b.maxWidth}`)).size, 1, 'one width rule for every bubble');
    const mine = bubbles.filter((b) => b.mine);
    const theirs = bubbles.filter((b) => !b.mine);
    for (const b of mine) assert.ok(b.right < b.left, 'own bubbles sit on the right');
    for (const b of theirs) assert.ok(b.left < b.right, 'others\u2019 bubbles sit on the left');
    assert.notEqual(mine[0].bg, theirs[0].bg, 'own bubbles have their own colour');
    for (const b of bubbles) assert.ok(b.width <= b.logWidth * 0.86, 'no bubble spans the whole log');

    // Links: http(s) only, new tab, no opener or referrer; the text is the message's, unchanged.
    const linky = 'see https://example.com/a_(b)?q=1, javascript:alert(1) and <a href="https://evil.test">x</a> or (http://x.test/path).';
    await send(alice, linky);
    await waitForMessage(bob.page, linky);
    const id = await idOf(bob.page, linky);
    const links = await bob.page.evaluate((mid) => {
      const li = document.querySelector(`#messages li.msg[data-id="${mid}"]`);
      return [...li.querySelectorAll('.text a')].map((a) => ({
        href: a.getAttribute('href'),
        text: a.textContent,
        rel: a.rel,
        target: a.target,
        children: a.children.length,
      }));
    }, id);
    assert.deepEqual(links, [
      { href: 'https://example.com/a_(b)?q=1', text: 'https://example.com/a_(b)?q=1', rel: 'noopener noreferrer', target: '_blank', children: 0 },
      { href: 'https://evil.test/', text: 'https://evil.test', rel: 'noopener noreferrer', target: '_blank', children: 0 },
      { href: 'http://x.test/path', text: 'http://x.test/path', rel: 'noopener noreferrer', target: '_blank', children: 0 },
    ]);
    const elements = await bob.page.evaluate(
      (mid) => [...document.querySelectorAll(`#messages li.msg[data-id="${mid}"] .text *`)].map((n) => n.tagName),
      id,
    );
    assert.deepEqual(elements, ['A', 'A', 'A'], 'nothing but the links became elements');

    // "New messages ↓": bob scrolls up; alice's next messages do not move him but show the button.
    for (let i = 0; i < 30; i += 1) await send(alice, `filler ${i}`);
    await waitForMessage(bob.page, 'filler 29');
    await bob.page.evaluate(() => {
      document.getElementById('log').scrollTop = 0;
    });
    await bob.page.waitForFunction(() => document.getElementById('log').scrollTop === 0);
    assert.equal(await bob.page.locator('#jump-new').isVisible(), false);
    await send(alice, 'are you there?');
    await waitForMessage(bob.page, 'are you there?');
    await bob.page.locator('#jump-new').waitFor({ state: 'visible' });
    assert.equal(await bob.page.locator('#jump-new').textContent(), '1 new message ↓');
    await send(alice, 'hello?');
    await waitForMessage(bob.page, 'hello?');
    await bob.page.waitForFunction(() => document.getElementById('jump-new').textContent === '2 new messages ↓');
    assert.equal(await bob.page.evaluate(() => document.getElementById('log').scrollTop), 0, 'the reader stays where he was');
    await bob.page.click('#jump-new');
    await bob.page.locator('#jump-new').waitFor({ state: 'hidden' });
    assert.ok(
      await bob.page.evaluate(() => {
        const log = document.getElementById('log');
        return log.scrollHeight - log.scrollTop - log.clientHeight < 2;
      }),
      'scrolled to the newest',
    );
    assert.equal(await bob.page.evaluate(() => document.activeElement.id), 'message-input');
    // Scrolling down by hand hides it too; and your own message brings you to the bottom.
    await bob.page.evaluate(() => {
      document.getElementById('log').scrollTop = 0;
    });
    await send(alice, 'one more');
    await bob.page.locator('#jump-new').waitFor({ state: 'visible' });
    await bob.page.evaluate(() => {
      const log = document.getElementById('log');
      log.scrollTop = log.scrollHeight;
    });
    await bob.page.locator('#jump-new').waitFor({ state: 'hidden' });
    await bob.page.evaluate(() => {
      document.getElementById('log').scrollTop = 0;
    });
    await send(bob, 'my own reply');
    await bob.page.waitForFunction(() => {
      const log = document.getElementById('log');
      return log.scrollHeight - log.scrollTop - log.clientHeight < 2;
    });
    assert.equal(await bob.page.locator('#jump-new').isVisible(), false);

    // On a phone: own bubbles right, distinct, not full width.
    const phone = await openLocal(browser, server.baseUrl, { viewport: PHONE, isMobile: true });
    await signUp(phone, uniqueName('pia'));
    await joinRoom(phone, room);
    await send(phone, 'from my phone');
    await waitForMessage(alice.page, 'from my phone');
    const onPhone = await phone.page.evaluate(() => {
      const log = document.getElementById('log').getBoundingClientRect();
      const pick = (li) => {
        const box = li.getBoundingClientRect();
        return { left: box.left - log.left, right: log.right - box.right, width: box.width, log: log.width, bg: getComputedStyle(li).backgroundColor };
      };
      return { mine: pick(document.querySelector('li.msg.mine')), theirs: pick(document.querySelector('li.msg:not(.mine)')) };
    });
    assert.ok(onPhone.mine.width < onPhone.mine.log * 0.9, 'own bubble is not full width on a phone');
    assert.ok(onPhone.mine.right < onPhone.mine.left, 'own bubble on the right on a phone');
    assert.notEqual(onPhone.mine.bg, onPhone.theirs.bg);
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone screen`);

    assertClean(alice);
    assertClean(bob);
    assertClean(phone);
  });
});


// The People panel up to 900 px wide: once open it must leave its own toggle in sight (the toggle
// closes it again), and Escape and a tap outside close it. Two people, so the panel lists both.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  PHONE,
  assertClean,
  joinRoom,
  openClient,
  signUp,
  uniqueName,
  waitOnline,
  withServerAndBrowser,
} from './helpers.mjs';

const TABLET = { width: 800, height: 720 };

const panelShown = (page) => page.locator('#side').isVisible();

/** The element painted at the middle of the toggle is the toggle itself (nothing covers it). */
async function toggleUncovered(page) {
  return page.evaluate(() => {
    const toggle = document.getElementById('toggle-side');
    const box = toggle.getBoundingClientRect();
    const top = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    return Boolean(top && toggle.contains(top));
  });
}

async function openPanel(page) {
  await page.click('#toggle-side');
  await page.locator('#side').waitFor({ state: 'visible' });
  assert.equal(await page.getAttribute('#toggle-side', 'aria-expanded'), 'true');
}

async function waitClosed(page) {
  await page.locator('#side').waitFor({ state: 'hidden' });
  assert.equal(await page.getAttribute('#toggle-side', 'aria-expanded'), 'false');
}

async function checkPanel(client, other, tap) {
  const { page } = client;
  assert.equal(await panelShown(page), false, 'the panel starts folded away');

  // Open: both people listed, and the toggle is not covered by the panel it opened.
  await openPanel(page);
  await waitOnline(page, other.username);
  await waitOnline(page, client.username);
  assert.ok(await toggleUncovered(page), 'the open People panel covers its own toggle');

  // The toggle closes it again.
  await page.click('#toggle-side');
  await waitClosed(page);

  // Escape closes it, and focus goes back to the toggle.
  await openPanel(page);
  await page.keyboard.press('Escape');
  await waitClosed(page);
  assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'toggle-side');

  // A tap (or click) on the conversation, outside the panel, closes it.
  await openPanel(page);
  const log = await page.locator('#log').boundingBox();
  await tap(page, log.x + 12, log.y + log.height / 2);
  await waitClosed(page);

  // Its own Close button too.
  await openPanel(page);
  await page.click('#close-side');
  await waitClosed(page);
}

test('People panel at tablet and phone width: toggle stays reachable, Escape and a tap outside close it', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const room = uniqueName('room');
    const tablet = await openClient(browser, server.baseUrl, { viewport: TABLET });
    const phone = await openClient(browser, server.baseUrl, { viewport: PHONE, isMobile: true });
    await signUp(tablet, uniqueName('tara'));
    await signUp(phone, uniqueName('pim'));
    await joinRoom(tablet, room);
    await joinRoom(phone, room);

    await checkPanel(tablet, phone, (page, x, y) => page.mouse.click(x, y));
    await checkPanel(phone, tablet, (page, x, y) => page.touchscreen.tap(x, y));

    assertClean(tablet);
    assertClean(phone);
  });
});

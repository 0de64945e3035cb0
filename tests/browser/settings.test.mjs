// Staying logged in (the HttpOnly refresh cookie: reloads, new tabs, a token refreshed before it
// expires with the socket left open) and the settings view (change password logs out the other
// browser; delete account, with its confirmation). One server with 60-second tokens, so the page
// refreshes at half a token's life (30 s).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RELAXED_LIMITS, startServer } from './server.mjs';
import {
  PASSWORD,
  assertClean,
  authErrorMatching,
  logIn,
  openClient,
  send,
  signUp,
  submitAuth,
  tokenOf,
  uniqueName,
  waitConnected,
  waitForMessage,
  withServerAndBrowser,
} from './helpers.mjs';

const vars = { ...RELAXED_LIMITS, TOKEN_TTL_SECS: '60' };

/** The cookies a page's script can read (the refresh cookie must not be among them). */
const scriptCookies = (page) => page.evaluate(() => document.cookie);

test('staying logged in, settings: change password, delete account', { timeout: 300_000 }, async (t) => {
  await withServerAndBrowser(startServer, { vars }, async ({ server, browser }) => {
    await t.test('reloads and new tabs stay logged in; a refresh keeps the socket open', async () => {
      const client = await openClient(browser, server.baseUrl);
      const { page } = client;
      const name = uniqueName('stay');
      await signUp(client, name);
      await waitConnected(page);
      assert.equal(await scriptCookies(page), '', 'the refresh cookie is HttpOnly');
      const [cookie] = (await client.context.cookies()).filter((c) => c.name === 'clubhouse_refresh');
      assert.ok(cookie, 'refresh cookie set');
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, 'Strict');
      assert.equal(cookie.path, '/token');

      // A reload, even with the tab's token gone, logs back in from the cookie alone.
      await page.evaluate(() => sessionStorage.clear());
      await page.reload();
      await page.locator('#chat-view').waitFor({ state: 'visible' });
      await waitConnected(page);
      assert.equal(await page.locator('#whoami').textContent(), name);
      // So does a new tab of the same browser.
      const tab = await client.context.newPage();
      await tab.goto(`${server.baseUrl}/`);
      await tab.locator('#chat-view').waitFor({ state: 'visible' });
      await waitConnected(tab);
      await tab.close();

      // Before the 60-second token runs out the page gets a new one; the socket stays open.
      const before = await tokenOf(page);
      const socketsBefore = client.sockets.length;
      await page.waitForFunction((old) => {
        const now = sessionStorage.getItem('clubhouse.token');
        return now && now !== old;
      }, before, { timeout: 45_000 });
      assert.equal(client.sockets.length, socketsBefore, 'no new socket for a refresh');
      assert.equal(await page.evaluate(() => window.__clubhouse.status()), 'open');
      await send(client, 'after the refresh');
      await waitForMessage(page, 'after the refresh');
      // The new token works; the page is still who it was.
      const res = await fetch(`${server.baseUrl}/rooms/lobby/members`, {
        headers: { Authorization: `Bearer ${await tokenOf(page)}` },
      });
      assert.equal(res.status, 200);
      assertClean(client);
      await client.context.close();
    });

    await t.test('a password change logs out the other browser, not this one', async () => {
      const here = await openClient(browser, server.baseUrl);
      const there = await openClient(browser, server.baseUrl);
      const name = uniqueName('chpw');
      await signUp(here, name);
      await logIn(there, name);
      await waitConnected(here.page);
      await waitConnected(there.page);

      const { page } = here;
      await page.click('#open-settings');
      await page.locator('#settings-view').waitFor({ state: 'visible' });
      // A wrong current password is refused in place.
      await page.fill('#current-password', 'not my password');
      await page.fill('#new-password', 'a brand new passphrase');
      await page.click('#password-btn');
      await page.waitForFunction(() => /not right/.test(document.getElementById('password-result').textContent));
      await page.fill('#current-password', PASSWORD);
      await page.fill('#new-password', 'a brand new passphrase');
      await page.click('#password-btn');
      await page.waitForFunction(() => /Password changed/.test(document.getElementById('password-result').textContent));

      // The other browser is back at the login form, by itself.
      await there.page.locator('#auth-view').waitFor({ state: 'visible', timeout: 20_000 });
      await authErrorMatching(there.page, /session/i);
      // ...and a reload does not bring it back: its refresh cookie's login was ended too.
      await there.page.reload();
      await there.page.locator('#auth-view').waitFor({ state: 'visible' });
      assert.equal(await tokenOf(there.page), null);

      // This one stays: still connected, and a reload keeps it logged in.
      await page.click('#close-settings');
      await page.locator('#chat-view').waitFor({ state: 'visible' });
      await waitConnected(page);
      await send(here, 'still here');
      await waitForMessage(page, 'still here');
      await page.reload();
      await waitConnected(page);

      // Only the new password logs in.
      await submitAuth(there.page, name, PASSWORD, '#login-btn');
      await authErrorMatching(there.page, /Wrong username or password/);
      await logIn(there, name, 'a brand new passphrase');
      await waitConnected(there.page);
      assertClean(here);
      assertClean(there);
      await here.context.close();
      await there.context.close();
    });

    await t.test('deleting the account, after a confirmation', async () => {
      const client = await openClient(browser, server.baseUrl);
      const { page } = client;
      const name = uniqueName('leaver');
      await signUp(client, name);
      await waitConnected(page);
      await page.click('#open-settings');
      assert.equal(await page.locator('#delete-confirm').isHidden(), true, 'nothing to confirm yet');
      await page.click('#delete-start');
      await page.locator('#delete-confirm').waitFor({ state: 'visible' });
      await page.fill('#delete-password', 'not my password');
      await page.click('#delete-btn');
      await page.waitForFunction(() => /not right/.test(document.getElementById('delete-result').textContent));
      await page.fill('#delete-password', PASSWORD);
      await page.click('#delete-btn');
      await page.locator('#auth-view').waitFor({ state: 'visible' });
      await authErrorMatching(page, /account was deleted/);
      assert.equal(await tokenOf(page), null);

      // Gone for good: a reload stays logged out, the password no longer works, the name is kept.
      await page.reload();
      await page.locator('#auth-view').waitFor({ state: 'visible' });
      await submitAuth(page, name, PASSWORD, '#login-btn');
      await authErrorMatching(page, /Wrong username or password/);
      await submitAuth(page, name, PASSWORD, '#signup-btn');
      await authErrorMatching(page, /already taken/);
      assertClean(client);
      await client.context.close();
    });
  });
});

// Sign-up and log-in errors shown inline, rate limiting with Retry-After, log out, and a revoked
// token ending the session.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from './server.mjs';
import {
  PASSWORD,
  assertClean,
  authErrorMatching,
  logIn,
  openClient,
  signUp,
  submitAuth,
  tokenOf,
  uniqueName,
  waitConnected,
  withServerAndBrowser,
} from './helpers.mjs';

const fillAndClick = submitAuth;

test('auth errors inline, log out, revoked token', { timeout: 180_000 }, async () => {
  await withServerAndBrowser(startServer, {}, async ({ server, browser }) => {
    const client = await openClient(browser, server.baseUrl);
    const { page } = client;
    const name = uniqueName('carol');

    // Weak passwords (checked before the request, and by the server).
    await fillAndClick(page, name, 'short', '#signup-btn');
    assert.match(await authErrorMatching(page, /weak|at least 8/i), /8 characters/);
    await fillAndClick(page, name, name, '#signup-btn');
    assert.match(await authErrorMatching(page, /must not be your username/), /weak/i);
    await fillAndClick(page, 'x', PASSWORD, '#signup-btn');
    await authErrorMatching(page, /3–32/);

    // Wrong password for an unknown user, then sign up, then the name is taken.
    await fillAndClick(page, name, PASSWORD, '#login-btn');
    await authErrorMatching(page, /Wrong username or password/);
    await signUp(client, name);
    await waitConnected(page);
    const token = await tokenOf(page);
    assert.ok(token, 'token kept in sessionStorage');
    assert.equal(await page.evaluate(() => localStorage.getItem('clubhouse.token')), null, 'token must not be in localStorage');

    // Log out: back to the form, token gone from storage and revoked on the server.
    await page.click('#logout');
    await page.locator('#auth-view').waitFor({ state: 'visible' });
    await authErrorMatching(page, /logged out/);
    assert.equal(await tokenOf(page), null);
    const after = await fetch(`${server.baseUrl}/rooms/lobby/members`, { headers: { Authorization: `Bearer ${token}` } });
    if (after.status !== 404) assert.equal(after.status, 401, 'the logged-out token must be refused');
    await page.reload();
    await page.locator('#auth-view').waitFor({ state: 'visible' });

    await fillAndClick(page, name, PASSWORD, '#signup-btn');
    await authErrorMatching(page, /already taken/);
    await fillAndClick(page, name, 'not the password', '#login-btn');
    await authErrorMatching(page, /Wrong username or password/);

    // Log in again; then "log out everywhere" from another client revokes this one's socket:
    // the page returns to the login form by itself (1008 with a token reason, or 401).
    await logIn(client, name);
    await waitConnected(page);
    const other = await openClient(browser, server.baseUrl);
    await logIn(other, name);
    await waitConnected(other.page);
    const res = await fetch(`${server.baseUrl}/logout?all=true`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${await tokenOf(other.page)}` },
    });
    if (res.status === 200) {
      await page.locator('#auth-view').waitFor({ state: 'visible', timeout: 20_000 });
      await authErrorMatching(page, /session/i);
      assert.equal(await tokenOf(page), null, 'token cleared on revocation');
    } else {
      test.diagnostic(`POST /logout?all=true answered ${res.status}: revocation not checked`);
    }

    assertClean(client);
  });
});

test('login rate limiting shows Retry-After', { timeout: 120_000 }, async () => {
  const vars = { LOGIN_MAX_FAILURES_PER_USER: '3', LOGIN_WINDOW_SECS: '60' };
  await withServerAndBrowser(startServer, { vars }, async ({ server, browser }) => {
    const client = await openClient(browser, server.baseUrl);
    const { page } = client;
    const name = uniqueName('dave');
    await signUp(client, name);
    await page.click('#logout');
    await page.locator('#auth-view').waitFor({ state: 'visible' });
    let limited = null;
    for (let i = 0; i < 6 && !limited; i += 1) {
      await fillAndClick(page, name, `wrong password ${i}`, '#login-btn');
      await page.waitForFunction(() => !document.getElementById('auth-error').hidden);
      const text = await page.locator('#auth-error').textContent();
      if (/Too many attempts/.test(text)) limited = text;
      else assert.match(text, /Wrong username or password/);
    }
    assert.ok(limited, 'no 429 after repeated wrong passwords');
    assert.match(limited, /Try again in \d+ seconds?/);
    assert.ok(await page.locator('#login-btn').isDisabled(), 'login disabled while rate limited');
    assertClean(client);
  });
});

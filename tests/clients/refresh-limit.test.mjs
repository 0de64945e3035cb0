// clients/js against a server where one login holds at most two badges (MAX_BADGES_PER_LOGIN=2):
// a refresh past that is 429 with Retry-After, and the library's planned retry waits for it
// instead of asking again every 10 s.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Clubhouse, PASSWORD, start, uniqueName } from './helpers.mjs';

let server;
before(async () => {
  server = await start({ MAX_BADGES_PER_LOGIN: '2' });
});
after(async () => {
  await server?.stop();
  server?.cleanup();
});

test('a refresh refused with 429 + Retry-After is retried only after it, with the same refresh token', { timeout: 60_000 }, async () => {
  const refreshes = [];
  const club = new Clubhouse({
    baseUrl: server.baseUrl,
    autoRefresh: true,
    fetch: (url, init) => {
      if (String(url).endsWith('/token') && String(init?.body ?? '').includes('grant_type=refresh_token')) {
        refreshes.push(Date.now());
      }
      return fetch(url, init);
    },
  });
  const username = uniqueName('lim');
  await club.signUp(username, PASSWORD);
  await club.logIn(username, PASSWORD);
  const first = club.token;
  // The login's badge and this one fill the login's two places.
  await club.refresh();
  const second = club.token;
  assert.notEqual(second, first);
  const refused = await club.refresh().then(
    () => assert.fail('a third badge for one login must be refused'),
    (e) => e,
  );
  assert.equal(refused.status, 429);
  assert.ok(refused.retryAfter >= 60, `Retry-After ${refused.retryAfter} s: until the login's first badge expires`);
  assert.equal(club.token, second, 'the badge in use is kept');
  assert.equal(refreshes.length, 2);
  // The library's old fixed pause was 10 s: nothing is asked again before the server's time.
  await new Promise((ok) => setTimeout(ok, 12_000));
  assert.equal(refreshes.length, 2, 'no refresh before Retry-After');
  club.setToken(null);
});

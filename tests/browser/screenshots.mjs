// Takes the README's screenshots into docs/screenshots/: the login card and a conversation between
// two people, at desktop (1280×800) and phone (375×812) size, on a fresh local server.
//
//   bash scripts/build && node tests/browser/screenshots.mjs
//
// Not a test (its name does not end in .test.mjs): it rewrites files that are committed.

import fs from 'node:fs';
import path from 'node:path';
import { RELAXED_LIMITS, REPO_ROOT, startServer } from './server.mjs';
import { DESKTOP, PHONE, joinRoom, openClient, send, signUp, waitForMessage, waitOnline, withServerAndBrowser } from './helpers.mjs';

const OUT = path.join(REPO_ROOT, 'docs', 'screenshots');
const ROOM = 'book-club';
const LOOK = { locale: 'en-US', timezoneId: 'Europe/Paris', colorScheme: 'light' };

async function shoot(page, name) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file });
  console.log(`wrote ${path.relative(REPO_ROOT, file)}`);
}

await withServerAndBrowser(startServer, { vars: RELAXED_LIMITS }, async ({ server, browser }) => {
  fs.mkdirSync(OUT, { recursive: true });
  const maya = await openClient(browser, server.baseUrl, { viewport: DESKTOP, ...LOOK });
  await shoot(maya.page, 'login-desktop.png');
  const theo = await openClient(browser, server.baseUrl, { viewport: PHONE, isMobile: true, ...LOOK });
  await shoot(theo.page, 'login-phone.png');

  await signUp(maya, 'maya');
  await signUp(theo, 'theo');
  await joinRoom(maya, ROOM);
  await joinRoom(theo, ROOM);
  await waitOnline(maya.page, 'theo');

  const lines = [
    [maya, 'Hi Theo! Did you get to the last chapter yet?'],
    [maya, 'No spoilers, promise :)'],
    [theo, 'Finished it on the train this morning.'],
    [theo, 'That ending! I did not see it coming.'],
    [maya, 'Right?! The author talks about it here: https://example.com/interview'],
    [theo, 'Reading it now. Same time next week for the next book?'],
    [maya, 'Deal. I will pick one and post it here.'],
  ];
  for (const [who, text] of lines) {
    await send(who, text);
    await waitForMessage(maya.page, text);
    await waitForMessage(theo.page, text);
  }
  await maya.page.locator('#message-input').blur();
  await theo.page.locator('#message-input').blur();
  await shoot(maya.page, 'chat-desktop.png');
  await shoot(theo.page, 'chat-phone.png');
});

// Presence dots kept live by `myEvents`, in real headless Chromium (Debian's, driven by
// playwright-core): a member of the open room goes online when a socket of theirs opens, away
// when they do nothing for `--presence-idle`, and offline `--presence-timeout` after it closes,
// with no reading of the members again (every GraphQL request the page makes is watched). The
// server runs with short times so the test can see them pass. Every wait is on something the
// page shows, with a bound. Screenshots go to tests/e2e/artifacts/.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { barrier, gql, launchChromium, register, startConfab, wsClient } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);
const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;
const PASSWORD = 'correct horse battery';
const WAIT = { timeout: 10_000 };

let server;
let browser;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startConfab({ args: ['--presence-timeout', '2s', '--presence-idle', '3s'] });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/// A new account, signed in in a browser context of its own. `page.graphql` lists the GraphQL
/// requests it makes over HTTP.
async function person(username) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.graphql = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url().endsWith('/graphql')) page.graphql.push(request.postData() || '');
  });
  await page.goto(server.url);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', PASSWORD);
  await page.click('button[value=register]');
  await page.waitForSelector('#chat:not([hidden])', WAIT);
  await page.waitForSelector('#status.live', WAIT);
  return page;
}

const tokenOf = (page) => page.evaluate(() => localStorage.getItem('confab.token'));

/// Starts keeping, in the page, each look of `userId`'s dot in the member list as it changes:
/// a change shown only briefly is kept too, and the dot must stay the same element.
function watchDot(page, userId) {
  return page.evaluate((id) => {
    const dot = document.querySelector(`#member-list li[data-id="${CSS.escape(id)}"] i.presence`);
    window.dotSeen = { dot, looks: [dot.className] };
    new MutationObserver(() => {
      if (window.dotSeen.looks.at(-1) !== dot.className) window.dotSeen.looks.push(dot.className);
    }).observe(dot, { attributes: true, attributeFilter: ['class'] });
  }, userId);
}

/// Waits until the watched dot has looked `word`, as its `count`th look.
const dotTurns = (page, count, word) => page.waitForFunction(
  ([n, w]) => window.dotSeen.looks.length >= n && window.dotSeen.looks[n - 1] === `presence ${w}`,
  [count, word], WAIT,
);

test('a member\'s dot turns online, away and offline live, with no reading of the members again', async () => {
  const bob = await register(server, 'bob');
  const ada = await person('ada');
  assert.equal(ada.graphql.filter((body) => body.includes('__type(')).length, 0, 'no introspection at sign-in');
  const { createRoom: den } = await gql(server, 'mutation($n: String!) { createRoom(name: $n) { id } }', { n: 'den' }, await tokenOf(ada));
  await gql(server, 'mutation($r: ID!) { joinRoom(roomId: $r) { id } }', { r: den.id }, bob.token);

  // Ada opens the room and its members: Bob has no socket, so he shows offline.
  await ada.reload();
  await ada.waitForSelector('#status.live', WAIT);
  await ada.click(`#my-rooms li[data-id="${den.id}"] .name`);
  await ada.click('#members');
  const bobsDot = `#member-list li[data-id="${bob.id}"] i.presence`;
  await ada.waitForSelector(`${bobsDot}.offline[title="offline"]`, WAIT);
  await watchDot(ada, bob.id);
  const from = ada.graphql.length;

  // Bob opens a socket: online. Then he does nothing: away once the idle time has passed.
  const bobs = wsClient(server, bob.token, { lazy: false });
  try {
    await barrier(bobs);
    await dotTurns(ada, 2, 'online');
    await dotTurns(ada, 3, 'away');
    await ada.waitForSelector(`${bobsDot}.away[aria-label="away"]`, WAIT);
    await ada.screenshot({ path: `${ARTIFACTS}/presence-away.png` });
  } finally {
    await bobs.dispose();
  }

  // His socket closed: offline once the timeout has passed.
  await dotTurns(ada, 4, 'offline');
  await ada.waitForSelector(`${bobsDot}.offline`, WAIT);
  const { looks, connected } = await ada.evaluate(() => ({ looks: window.dotSeen.looks, connected: window.dotSeen.dot.isConnected }));
  assert.deepEqual(looks, ['presence offline', 'presence online', 'presence away', 'presence offline'], 'each change once, in order');
  assert.ok(connected, 'the same dot, not a member list drawn again');
  const reads = ada.graphql.slice(from).filter((body) => /\b(members|memberships)\(|presence/.test(body));
  assert.deepEqual(reads, [], 'the members were not read again');
  assert.equal(await ada.isVisible('#error'), false, await ada.textContent('#error'));
  await ada.context().close();
});

// The chat page in real headless Chromium (Debian's, driven by playwright-core; no browser is
// downloaded): two people in two browser contexts chat live, and a deletion takes the text off
// the other screen; the page's sessions: listed, logged out, revoked elsewhere, and renewed
// before (or after) the access token expires. Screenshots go to tests/e2e/artifacts/.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gql, launchChromium, startConfab } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);
const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;

let server;
let browser;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startConfab();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const PASSWORD = 'correct horse battery';

async function person(username, viewport, { on = server, action = 'register' } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(on.url);
  await signIn(page, username, action);
  return page;
}

async function signIn(page, username, action = 'register') {
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', PASSWORD);
  await page.click(`button[value=${action}]`);
  await page.waitForSelector('#chat:not([hidden])');
  await page.waitForSelector('#status.live');
  assert.equal(await page.isVisible('#signin'), false, 'the sign-in form is gone once signed in');
}

/// A GraphQL request over HTTP from outside the page; its whole answer, errors included.
async function post(on, query, variables = {}, token = null) {
  const response = await fetch(`${on.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

const codeOf = (answer) => answer.errors?.[0]?.extensions?.code;

/// Signs `username` in over HTTP, as another device would: a second session.
async function loginElsewhere(on, username) {
  const answer = await post(on, 'mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token refreshToken } }',
    { u: username, p: PASSWORD });
  assert.equal(answer.errors, undefined, JSON.stringify(answer.errors));
  return answer.data.login;
}

/// The session the page keeps (in IndexedDB, shared by the browser's tabs), or null; with
/// `change`, first changes it.
function keptSession(page, change = null) {
  return page.evaluate((change) => new Promise((resolve, reject) => {
    const opening = indexedDB.open('confab', 1);
    opening.onerror = () => reject(opening.error);
    opening.onsuccess = () => {
      const kept = opening.result.transaction('session', 'readwrite').objectStore('session');
      const read = kept.get('current');
      read.onsuccess = () => {
        if (change && read.result) kept.put({ ...read.result, ...change }, 'current');
        resolve(read.result || null);
      };
    };
  }), change);
}

async function createRoom(page, name) {
  await page.fill('#new-room input[name=name]', name);
  await page.click('#new-room button');
  await page.waitForSelector(`#room-name:text("${name}")`);
}

async function say(page, text) {
  await page.fill('#composer textarea', text);
  await page.press('#composer textarea', 'Enter');
  await page.waitForSelector(`#messages li:has-text("${text}")`);
}

test('two people chat live in the page, and a deletion takes the text away for both', async () => {
  const ada = await person('ada', { width: 1100, height: 700 });
  const bob = await person('bob', { width: 390, height: 760 }); // a phone-sized window

  await ada.fill('#new-room input[name=name]', 'lobby');
  await ada.click('#new-room button');
  await ada.waitForSelector('#room-name:text("lobby")');

  await bob.reload();
  await bob.waitForSelector('#all-rooms li:has-text("lobby") button');
  await bob.click('#all-rooms li:has-text("lobby") button');
  await bob.waitForSelector('#room-name:text("lobby")');
  await ada.waitForSelector('#messages li.notice:has-text("bob joined")');
  await ada.waitForSelector('#members:text("2 members")');

  await ada.fill('#composer textarea', 'Hello Bob, welcome!');
  await ada.press('#composer textarea', 'Enter');
  await bob.waitForSelector('#messages li:has-text("Hello Bob, welcome!")');

  await bob.fill('#composer textarea', 'Thanks Ada!');
  await bob.click('#composer button');
  await ada.waitForSelector('#messages li:has-text("Thanks Ada!")');
  await ada.screenshot({ path: `${ARTIFACTS}/ada-chat.png` });
  await bob.screenshot({ path: `${ARTIFACTS}/bob-phone-chat.png` });

  // Ada deletes her message; its text leaves Bob's screen without a reload.
  await ada.click('#messages li:has-text("Hello Bob, welcome!") button:text("Delete")');
  await bob.waitForSelector('#messages li:has-text("Hello Bob, welcome!")', { state: 'detached' });
  await ada.waitForSelector('#messages li:has-text("Hello Bob, welcome!")', { state: 'detached' });
  await bob.screenshot({ path: `${ARTIFACTS}/bob-after-delete.png` });
  assert.equal(await bob.locator('#messages li:has-text("Thanks Ada!")').count(), 1);
});

test('errors reach the person in words', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(server.url);
  await page.fill('input[name=username]', 'nobody');
  await page.fill('input[name=password]', 'wrong password');
  await page.click('button[value=login]');
  await page.waitForSelector('#error:not([hidden])');
  assert.equal(await page.isVisible('#chat'), false, 'no chat before signing in');
  assert.match(await page.textContent('#error'), /wrong username or password/);
  await page.screenshot({ path: `${ARTIFACTS}/sign-in-error.png` });
  await context.close();
});

test('the page resumes after the server restarts, and misses nothing sent meanwhile', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'confab-e2e-'));
  const database = `sqlite://${join(dir, 'confab.db')}`;
  let restartable = await startConfab({ database });
  const addr = restartable.url.replace('http://', '');
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(restartable.url);
    await page.fill('input[name=username]', 'carol');
    await page.fill('input[name=password]', 'correct horse battery');
    await page.click('button[value=register]');
    await page.waitForSelector('#status.live');
    await page.fill('#new-room input[name=name]', 'durable');
    await page.click('#new-room button');
    await page.waitForSelector('#room-name:text("durable")');
    await page.fill('#composer textarea', 'before the restart');
    await page.press('#composer textarea', 'Enter');
    await page.waitForSelector('#messages li:has-text("before the restart")');

    await restartable.stop();
    await page.waitForSelector('#status.reconnecting');
    restartable = await startConfab({ addr, database });
    // Sent by someone else while the page was away or reconnecting.
    const token = await page.evaluate(() => localStorage.getItem('confab.token'));
    const roomId = await page.evaluate(() => document.querySelector('.rooms li.current').dataset.id);
    await gql(restartable, 'mutation($r: ID!) { sendMessage(roomId: $r, body: "while you were away") { id } }', { r: roomId }, token);

    await page.waitForSelector('#status.live', { timeout: 20_000 });
    await page.waitForSelector('#messages li:has-text("while you were away")');
    assert.equal(await page.locator('#messages li:has-text("before the restart")').count(), 1);
    await page.screenshot({ path: `${ARTIFACTS}/after-restart.png` });
    await context.close();
  } finally {
    await restartable.stop();
  }
});

test('the sessions list shows this session, and revokes another', async () => {
  const page = await person('erin');
  const other = await loginElsewhere(server, 'erin');
  await page.click('#sessions-open');
  await page.waitForSelector('#sessions[open] #session-list li:nth-child(2)');
  assert.equal(await page.locator('#session-list li').count(), 2);
  const current = page.locator('#session-list li.current');
  assert.equal(await current.count(), 1);
  assert.match(await current.textContent(), /Headless Chrome on Linux.*This browser/s);
  assert.equal(await current.locator('button').count(), 0, 'no Revoke for the current session');
  const elsewhere = page.locator('#session-list li:not(.current)');
  assert.match(await elsewhere.textContent(), /Node\.js/);
  await page.screenshot({ path: `${ARTIFACTS}/sessions.png` });

  await elsewhere.locator('button:text("Revoke")').click();
  await page.waitForSelector('#session-list li:nth-child(2)', { state: 'detached' });
  assert.equal(await page.locator('#session-list li.current').count(), 1);
  assert.equal(codeOf(await post(server, '{ me { id } }', {}, other.token)), 'UNAUTHENTICATED');
  await page.click('#sessions-close');
  await page.waitForSelector('#sessions', { state: 'hidden' });
  await page.context().close();
});

test('Log out returns to the sign-in form, and the page\'s tokens are refused after', async () => {
  const page = await person('frank');
  const before = await keptSession(page);
  assert.ok(before.token && before.refreshToken, 'the page keeps its tokens');
  assert.equal(await page.evaluate(() => localStorage.getItem('confab.token')), before.token, 'for GraphiQL too');
  assert.equal(codeOf(await post(server, '{ me { id } }', {}, before.token)), undefined);

  await page.click('#logout');
  await page.waitForSelector('#signin:not([hidden])');
  assert.equal(await page.isVisible('#chat'), false);
  assert.equal(await page.isVisible('#error'), false, 'a chosen logout is no error');
  await page.waitForFunction(() => localStorage.getItem('confab.token') === null);
  assert.equal(await keptSession(page), null);
  assert.equal(codeOf(await post(server, '{ me { id } }', {}, before.token)), 'UNAUTHENTICATED');
  const refresh = 'mutation($t: String!) { refreshSession(refreshToken: $t) { token } }';
  assert.equal(codeOf(await post(server, refresh, { t: before.refreshToken })), 'UNAUTHENTICATED');
  await page.reload();
  await page.waitForSelector('#signin:not([hidden])');
  assert.equal(await page.isVisible('#chat'), false, 'nothing signs the page in again');
  await page.context().close();
});

test('a session ended from another client signs the page out, saying so', async () => {
  const page = await person('gwen');
  await createRoom(page, 'soon gone');
  const other = await loginElsewhere(server, 'gwen');
  const ended = await post(server, 'mutation { logoutEverywhere }', {}, other.token);
  assert.equal(ended.data.logoutEverywhere, 2);
  // The page's socket closes (4403); renewal is refused; the page says why.
  await page.waitForSelector('#error:has-text("Signed out elsewhere")');
  await page.waitForSelector('#signin:not([hidden])');
  assert.equal(await page.isVisible('#chat'), false);
  assert.equal(await page.isVisible('#status'), false, 'no connection badge on the sign-in form');
  await page.waitForFunction(() => localStorage.getItem('confab.token') === null);
  assert.equal(await keptSession(page), null);
  await page.screenshot({ path: `${ARTIFACTS}/signed-out-elsewhere.png` });
  await page.context().close();
});

test('tabs share a session and renew it in turn; an expired token the server refuses is renewed', async () => {
  // Access tokens that live 10 s: each tab renews a few times during this test.
  const shortLived = await startConfab({ args: ['--token-ttl', '10s'] });
  try {
    const first = await person('hana', undefined, { on: shortLived });
    assert.equal(await first.evaluate(() => Boolean(navigator.locks)), true, 'Web Locks coordinate the tabs');
    await createRoom(first, 'renewals');
    const issued = await keptSession(first);
    // A second tab of the same browser is signed in already, with the same session.
    const second = await first.context().newPage();
    await second.goto(shortLived.url);
    await second.waitForSelector('#status.live');
    await second.click('#my-rooms li:has-text("renewals") span');
    await second.waitForSelector('#room-name:text("renewals")');

    // Another browser whose renewal timer cannot help (its clock reads the token as good for
    // an hour): the server's refusal of the expired token must renew it.
    const late = await person('hana', undefined, { on: shortLived, action: 'login' });
    await keptSession(late, { expires: Date.now() + 3_600_000 });
    await late.reload();
    await late.waitForSelector('#status.live');
    await late.click('#my-rooms li:has-text("renewals") span');
    await late.waitForSelector('#room-name:text("renewals")');
    const lateIssued = await keptSession(late);
    const lateSignedInAt = Date.now();

    // Past the first tokens' expiry, with both tabs' renewal timers having fired.
    await first.waitForFunction((token) => localStorage.getItem('confab.token') !== token, issued.token, { timeout: 15_000 });
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, lateSignedInAt + 11_000 - Date.now())));
    assert.equal(codeOf(await post(shortLived, '{ me { id } }', {}, issued.token)), 'UNAUTHENTICATED', 'the first token expired');
    assert.equal(codeOf(await post(shortLived, '{ me { id } }', {}, lateIssued.token)), 'UNAUTHENTICATED', 'so did the late one');

    await say(second, 'from the second tab');
    await first.waitForSelector('#messages li:has-text("from the second tab")');
    await say(first, 'from the first tab');
    await second.waitForSelector('#messages li:has-text("from the first tab")');
    await say(late, 'renewed when refused');
    await first.waitForSelector('#messages li:has-text("renewed when refused")');
    assert.notEqual((await keptSession(late)).token, lateIssued.token);
    for (const page of [first, second, late]) {
      assert.equal(await page.isVisible('#error'), false, await page.textContent('#error'));
    }
    const shared = await keptSession(first);
    assert.equal(await second.evaluate(() => localStorage.getItem('confab.token')), shared.token);
    assert.notEqual(shared.refreshToken, issued.refreshToken, 'renewed, and the refresh token rotated');
    // Two sessions: one for the browser with two tabs, one for the other browser.
    const listed = await post(shortLived, '{ sessions { id current } }', {}, shared.token);
    assert.equal(listed.data.sessions.length, 2);
    await first.context().close();
    await late.context().close();
  } finally {
    await shortLived.stop();
  }
});

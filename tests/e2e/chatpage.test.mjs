// The chat page holding up under ordinary use, in real headless Chromium (Debian's, driven by
// playwright-core): long words on a phone, busy buttons (a slow double click registers once),
// error banners that stay, dates and day dividers, the open room across a reload, Leave,
// editing in place, safe links, placeholders for deleted messages, drafts across a sign-in,
// and no "offline" badge on the sign-in form. Slowness is made by holding a request in a
// route until the test lets it go, never by waiting a while. Screenshots go to
// tests/e2e/artifacts/.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gql, launchChromium, startConfab } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);
const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;
const PASSWORD = 'correct horse battery';
const WAIT = { timeout: 10_000 };
const DESKTOP = { width: 1100, height: 760 };
const PHONE = { width: 375, height: 700 };

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

/// A page on the chat page, not signed in; every dialog it opens is recorded and accepted.
async function visitor({ viewport = DESKTOP, on = server } = {}) {
  const context = await browser.newContext({ viewport, locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  page.dialogs = [];
  page.on('dialog', (dialog) => {
    page.dialogs.push(dialog.type());
    dialog.accept();
  });
  await page.goto(on.url);
  return page;
}

async function signIn(page, username, action = 'register') {
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', PASSWORD);
  await page.click(`button[value=${action}]`);
  await page.waitForSelector('#chat:not([hidden])', WAIT);
  await page.waitForSelector('#status.live', WAIT);
}

/// A new account, signed in in a browser context of its own.
async function person(username, options = {}) {
  const page = await visitor(options);
  await signIn(page, username);
  return page;
}

const tokenOf = (page) => page.evaluate(() => localStorage.getItem('confab.token'));

async function createRoom(page, name) {
  await page.fill('#new-room input[name=name]', name);
  await page.click('#new-room button');
  await page.waitForSelector(`#room-name:text-is("${name}")`, WAIT);
  return page.evaluate(() => document.querySelector('#my-rooms li.current').dataset.id);
}

async function openRoom(page, name) {
  await page.click(`#my-rooms li:has(.name:text-is("${name}")) .name`);
  await page.waitForSelector(`#room-name:text-is("${name}")`, WAIT);
}

async function joinRoom(page, name) {
  await page.reload();
  await page.click(`#all-rooms li:has-text("${name}") button:text("Join")`, WAIT);
  await page.waitForSelector(`#room-name:text-is("${name}")`, WAIT);
}

async function say(page, text) {
  await page.fill('#composer textarea', text);
  await page.press('#composer textarea', 'Enter');
  await page.locator('#messages li[data-id] .body', { hasText: text.slice(0, 60) }).first().waitFor(WAIT);
}

/// The shown message whose body is exactly `text`.
const message = (page, text) => page.locator('#messages li[data-id]', {
  has: page.locator('.body', { hasText: new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }),
});

/// Holds the page's GraphQL requests that contain `field(` until `release()`; `seen` counts them.
async function hold(page, field) {
  const held = { seen: 0, waiting: [], arrived: null };
  let gate;
  const opened = new Promise((resolve) => { gate = resolve; });
  let arrive;
  held.arrived = new Promise((resolve) => { arrive = resolve; });
  held.release = gate;
  await page.route('**/graphql', async (route) => {
    if (route.request().method() === 'POST' && (route.request().postData() || '').includes(`${field}(`)) {
      held.seen += 1;
      arrive();
      await opened;
    }
    await route.continue();
  });
  return held;
}

test('a long word or URL on a phone neither widens the page nor pushes Send out of view', async () => {
  const page = await person('longwords', { viewport: PHONE });
  // A room whose name is one long word, with a long topic.
  await page.fill('#new-room input[name=topic]', 't'.repeat(300));
  await createRoom(page, 'w'.repeat(64));
  const word = 'w'.repeat(300);
  const url = `https://example.com/${'segment-'.repeat(40)}end`;
  await say(page, word);
  await say(page, url);
  const widths = () => page.evaluate(() => {
    const send = document.querySelector('#composer button').getBoundingClientRect();
    return {
      viewport: window.innerWidth,
      document: document.documentElement.scrollWidth,
      body: document.body.scrollWidth,
      list: document.querySelector('#messages').scrollWidth - document.querySelector('#messages').clientWidth,
      sendLeft: send.left,
      sendRight: send.right,
    };
  });
  const phone = await widths();
  await page.screenshot({ path: `${ARTIFACTS}/long-words-phone.png` });
  assert.equal(phone.viewport, PHONE.width);
  assert.equal(phone.document, PHONE.width, 'the page is as wide as the phone');
  assert.equal(phone.body, PHONE.width);
  assert.equal(phone.list, 0, 'the messages do not scroll sideways');
  assert.ok(phone.sendLeft >= 0 && phone.sendRight <= PHONE.width, `Send in view: ${JSON.stringify(phone)}`);

  // The same room in a desktop window.
  await page.setViewportSize(DESKTOP);
  const desktop = await widths();
  assert.equal(desktop.document, DESKTOP.width);
  assert.equal(desktop.list, 0);
  assert.ok(desktop.sendRight <= DESKTOP.width, `Send in view: ${JSON.stringify(desktop)}`);
  await page.context().close();
});

test('double-clicking "Create account" on a slow network registers once, without an error', async () => {
  const page = await visitor();
  const held = await hold(page, 'register');
  await page.fill('input[name=username]', 'doubleclick');
  await page.fill('input[name=password]', PASSWORD);
  await page.dblclick('button[value=register]');
  await held.arrived;
  // While the request is under way, both buttons are busy: Enter does not submit again either.
  assert.equal(await page.isDisabled('button[value=register]'), true);
  assert.equal(await page.isDisabled('button[value=login]'), true);
  assert.equal(await page.getAttribute('button[value=register]', 'aria-busy'), 'true');
  await page.press('input[name=password]', 'Enter');
  held.release();
  await page.waitForSelector('#chat:not([hidden])', WAIT);
  await page.waitForSelector('#status.live', WAIT);
  assert.equal(held.seen, 1, 'one register request');
  assert.equal(await page.isVisible('#error'), false, await page.textContent('#error'));
  assert.equal(await page.textContent('#who'), 'doubleclick');
  await page.context().close();
});

test('a room button is busy while its request is under way', async () => {
  const ada = await person('busyada');
  await createRoom(ada, 'busy room');
  const bob = await person('busybob');
  await bob.reload();
  const held = await hold(bob, 'joinRoom');
  const join = bob.locator('#all-rooms li:has-text("busy room") button:text("Join")');
  await join.dblclick();
  await held.arrived;
  assert.equal(await join.isDisabled(), true);
  held.release();
  await bob.waitForSelector('#room-name:text-is("busy room")', WAIT);
  assert.equal(held.seen, 1);
  await ada.context().close();
  await bob.context().close();
});

test('an error shown stays when unrelated updates arrive', async () => {
  const ada = await person('bannerada');
  await createRoom(ada, 'banner');
  // A second room of the same name is refused.
  await ada.fill('#new-room input[name=name]', 'banner');
  await ada.click('#new-room button');
  await ada.waitForSelector('#error:not([hidden])', WAIT);
  const shown = await ada.textContent('#error');
  assert.match(shown, /a room with that name already exists/);

  // Bob joins: Ada's page reads the room again, and the error stays.
  const bob = await person('bannerbob');
  await joinRoom(bob, 'banner');
  await ada.waitForSelector('#messages li.notice:has-text("bannerbob joined")', WAIT);
  await ada.waitForSelector('#members:text-is("2 members")', WAIT);
  await say(bob, 'hello there');
  await message(ada, 'hello there').waitFor(WAIT);
  assert.equal(await ada.isVisible('#error'), true, 'the error is still shown');
  assert.equal(await ada.textContent('#error'), shown);
  await ada.context().close();
  await bob.context().close();
});

test('times say the date when not from today, with a divider where the day changes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'confab-dates-'));
  const file = join(dir, 'confab.db');
  const own = await startConfab({ database: `sqlite://${file}` });
  try {
    const page = await person('dates', { on: own });
    await createRoom(page, 'history');
    await say(page, 'from the archive');
    await say(page, 'fresh news');
    // Today's messages: one divider, "Today", and times without a date.
    assert.deepEqual(await page.locator('#messages li.day').allTextContents(), ['Today']);
    assert.doesNotMatch(await message(page, 'fresh news').locator('time').textContent(), /,/);

    // The store says the first was written three days ago (as if it had been).
    const then = Date.now() - 3 * 24 * 3600 * 1000;
    execFileSync('python3', ['-c', `import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
with db:
    changed = db.execute("UPDATE messages SET created_at = ? WHERE body = ?", (int(sys.argv[2]), sys.argv[3])).rowcount
assert changed == 1, changed`, file, String(then), 'from the archive']);
    await page.reload();
    await page.waitForSelector('#chat:not([hidden])', WAIT);
    if ((await page.textContent('#room-name')) !== 'history') await openRoom(page, 'history');
    await message(page, 'fresh news').waitFor(WAIT);

    const day = new Date(then);
    const sameYear = day.getUTCFullYear() === new Date().getUTCFullYear();
    const date = day.toLocaleDateString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC', ...(sameYear ? {} : { year: 'numeric' }) });
    const long = day.toLocaleDateString('en-US', { weekday: 'long', month: 'long', day: 'numeric', timeZone: 'UTC', ...(sameYear ? {} : { year: 'numeric' }) });
    const archived = await message(page, 'from the archive').locator('time').textContent();
    assert.ok(archived.startsWith(`${date}, `), `"${archived}" starts with "${date}, "`);
    assert.doesNotMatch(await message(page, 'fresh news').locator('time').textContent(), /,/);
    // In order: a divider for that day, its message, "Today", today's message.
    const order = await page.evaluate(() => [...document.querySelectorAll('#messages li')]
      .map((li) => (li.classList.contains('day') ? `day:${li.textContent}` : li.querySelector('.body')?.textContent)));
    assert.deepEqual(order, [`day:${long}`, 'from the archive', 'day:Today', 'fresh news']);
    await page.screenshot({ path: `${ARTIFACTS}/day-dividers.png` });
    await page.context().close();
  } finally {
    await own.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the open room survives a reload', async () => {
  const page = await person('reloader');
  await createRoom(page, 'first floor');
  await say(page, 'on the first floor');
  await createRoom(page, 'second floor');
  await openRoom(page, 'first floor');
  await page.reload();
  await page.waitForSelector('#room-name:text-is("first floor")', WAIT);
  await message(page, 'on the first floor').waitFor(WAIT);
  assert.equal(await page.locator('#my-rooms li.current .name').textContent(), 'first floor');
  await page.context().close();
});

test('Leave takes me out of the room', async () => {
  const ada = await person('leaveada');
  await createRoom(ada, 'townhall');
  const bob = await person('leavebob');
  await joinRoom(bob, 'townhall');
  await ada.waitForSelector('#members:text-is("2 members")', WAIT);

  const held = await hold(bob, 'leaveRoom');
  await bob.click('#leave');
  await held.arrived;
  assert.equal(await bob.isDisabled('#leave'), true, 'busy while leaving');
  held.release();
  await bob.waitForSelector('#room-name:text-is("Pick a room")', WAIT);
  await bob.waitForSelector('#all-rooms li:has-text("townhall") button:text("Join")', WAIT);
  assert.equal(await bob.locator('#my-rooms li:has-text("townhall")').count(), 0);
  assert.deepEqual(bob.dialogs, ['confirm']);
  await ada.waitForSelector('#messages li.notice:has-text("leavebob left")', WAIT);
  await ada.waitForSelector('#members:text-is("1 member")', WAIT);
  const { myRooms } = await gql(server, '{ myRooms(first: 10) { edges { node { name } } } }', {}, await tokenOf(bob));
  assert.deepEqual(myRooms.edges, []);
  // And a reload does not open it again.
  await bob.reload();
  await bob.waitForSelector('#chat:not([hidden])', WAIT);
  await bob.waitForSelector('#all-rooms li:has-text("townhall")', WAIT);
  assert.equal(await bob.textContent('#room-name'), 'Pick a room');
  await ada.context().close();
  await bob.context().close();
});

test('editing in place: Enter saves, Escape cancels, no prompt', async () => {
  const ada = await person('editor');
  const roomId = await createRoom(ada, 'drafting');
  await say(ada, 'tyop in here');
  const ours = message(ada, 'tyop in here');
  await ours.locator('button:text("Edit")').click();
  const box = ada.locator('#messages li form.edit textarea');
  await box.waitFor(WAIT);
  assert.equal(await box.inputValue(), 'tyop in here');
  assert.equal(await box.evaluate((el) => el === document.activeElement), true, 'the editor has the focus');
  await box.fill('typo fixed here');
  await ada.screenshot({ path: `${ARTIFACTS}/editing-in-place.png` });
  await box.press('Enter');
  const fixed = message(ada, 'typo fixed here');
  await fixed.waitFor(WAIT);
  await fixed.locator('.meta:has-text("edited")').waitFor(WAIT);
  assert.equal(await ada.locator('#messages form.edit').count(), 0, 'the editor is gone once saved');

  await fixed.locator('button:text("Edit")').click();
  await box.waitFor(WAIT);
  await box.fill('never saved');
  await box.press('Escape');
  await ada.locator('#messages form.edit').waitFor({ state: 'detached', ...WAIT });
  await message(ada, 'typo fixed here').waitFor(WAIT);

  const { messages } = await gql(server, 'query($r: ID!) { messages(roomId: $r, last: 5) { edges { node { body } } } }',
    { r: roomId }, await tokenOf(ada));
  assert.deepEqual(messages.edges.map((edge) => edge.node.body), ['typo fixed here']);
  assert.deepEqual(ada.dialogs, [], 'no prompt() or other dialog');
  await ada.context().close();
});

test('links are clickable and safe; a javascript: URL never becomes a link', async () => {
  const ada = await person('linker');
  await createRoom(ada, 'links');
  const good = 'https://example.com/wiki/Foo_(bar)?q=1&r=2';
  await say(ada, `read ${good}. then http://example.org too`);
  await say(ada, 'javascript:alert(document.domain)');
  await say(ada, '<a href="javascript:alert(1)">click</a> <img src=x onerror=alert(2)>');
  await say(ada, 'see https://example.net/"><img src=x onerror=alert(3)>');

  const links = await ada.evaluate(() => [...document.querySelectorAll('#messages a')].map((a) => ({
    href: a.getAttribute('href'), text: a.textContent, target: a.target, rel: a.rel,
  })));
  assert.deepEqual(links, [
    { href: good, text: good, target: '_blank', rel: 'noopener noreferrer' },
    { href: 'http://example.org/', text: 'http://example.org', target: '_blank', rel: 'noopener noreferrer' },
    { href: 'https://example.net/', text: 'https://example.net/', target: '_blank', rel: 'noopener noreferrer' },
  ]);
  await message(ada, 'javascript:alert(document.domain)').waitFor(WAIT);
  assert.equal(await ada.locator('#messages img').count(), 0, 'markup in a message stays text');
  assert.deepEqual(ada.dialogs, [], 'nothing ran');
  await ada.context().close();
});

test('a deleted message leaves a placeholder, naming the moderator who deleted it', async () => {
  const ada = await person('modada');
  await createRoom(ada, 'cleanup');
  const bob = await person('modbob');
  await joinRoom(bob, 'cleanup');
  await ada.waitForSelector('#members:text-is("2 members")', WAIT);
  await say(bob, 'wrong room, sorry');
  await say(bob, 'spam spam spam');
  await say(bob, 'still here');
  await message(ada, 'spam spam spam').waitFor(WAIT);

  // Bob deletes his own message; Ada deletes another of his as the room's owner.
  await message(bob, 'wrong room, sorry').locator('button:text("Delete")').click();
  await message(ada, 'spam spam spam').locator('button:text("Delete")').click();
  for (const page of [ada, bob]) {
    await message(page, 'message deleted').waitFor(WAIT);
    await message(page, 'message deleted by modada').waitFor(WAIT);
    const bodies = await page.locator('#messages li[data-id] .body').allTextContents();
    assert.deepEqual(bodies, ['message deleted', 'message deleted by modada', 'still here']);
    assert.equal(await page.locator('#messages li.deleted button').count(), 0, 'nothing to do with a deleted message');
    assert.equal(await page.locator('#messages li.deleted .author:text-is("modbob")').count(), 2);
  }
  await bob.screenshot({ path: `${ARTIFACTS}/deleted-placeholders.png` });
  await ada.context().close();
  await bob.context().close();
});

test('drafts are kept per room across a session that ends, and restored after signing in again', async () => {
  const page = await person('drafter');
  await createRoom(page, 'alpha');
  await page.fill('#composer textarea', 'half a thought for alpha');
  await createRoom(page, 'beta');
  assert.equal(await page.inputValue('#composer textarea'), '', 'another room has its own draft');
  await page.fill('#composer textarea', 'beta draft');

  // The session ends elsewhere; the page goes back to the sign-in form, and is reloaded.
  const other = await gql(server, 'mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }',
    { u: 'drafter', p: PASSWORD });
  await gql(server, 'mutation { logoutEverywhere }', {}, other.login.token);
  await page.waitForSelector('#signin:not([hidden])', WAIT);
  await page.reload();
  await page.waitForSelector('#signin:not([hidden])', WAIT);
  await signIn(page, 'drafter', 'login');

  await page.waitForSelector('#room-name:text-is("beta")', WAIT);
  assert.equal(await page.inputValue('#composer textarea'), 'beta draft');
  await openRoom(page, 'alpha');
  assert.equal(await page.inputValue('#composer textarea'), 'half a thought for alpha');
  // Sent, a draft is gone.
  await page.press('#composer textarea', 'Enter');
  await message(page, 'half a thought for alpha').waitFor(WAIT);
  await page.reload();
  await page.waitForSelector('#room-name:text-is("alpha")', WAIT);
  assert.equal(await page.inputValue('#composer textarea'), '');
  await page.context().close();
});

test('the sign-in form shows no connection badge; signed in, the page shows the live connection', async () => {
  const page = await visitor();
  await page.waitForSelector('#signin:not([hidden])', WAIT);
  assert.equal(await page.isVisible('#status'), false, 'no badge before signing in');
  assert.equal(await page.locator('text=offline').count(), 0);
  await page.screenshot({ path: `${ARTIFACTS}/sign-in.png` });
  await signIn(page, 'badger');
  assert.equal(await page.isVisible('#status'), true);
  assert.equal(await page.textContent('#status'), 'live');
  await page.click('#logout');
  await page.waitForSelector('#signin:not([hidden])', WAIT);
  assert.equal(await page.isVisible('#status'), false, 'none after logging out either');
  await page.context().close();
});

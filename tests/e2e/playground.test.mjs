// The chat page in real headless Chromium (Debian's, driven by playwright-core; no browser is
// downloaded): two people in two browser contexts chat live, and a deletion disappears from
// the other screen. Screenshots go to tests/e2e/artifacts/.
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

async function person(username, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(server.url);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', 'correct horse battery');
  await page.click('button[value=register]');
  await page.waitForSelector('#chat:not([hidden])');
  await page.waitForSelector('#status.live');
  assert.equal(await page.isVisible('#signin'), false, 'the sign-in form is gone once signed in');
  return page;
}

test('two people chat live in the page, and a deletion disappears for both', async () => {
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

  // Ada deletes her message; it disappears from Bob's screen without a reload.
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

// Read state in the chat page, in real headless Chromium (Debian's, driven by playwright-core):
// unread and mention badges in the room list for messages sent elsewhere, cleared by opening
// the room (the page marks what comes into view read, as the API then says), a mention of me
// highlighted, and messages arriving in the open room marked read at most about once a second.
// Every wait is on something the page shows or sends, with a bound. Screenshots go to
// tests/e2e/artifacts/.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { gql, launchChromium, startConfab } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);
const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;
const PASSWORD = 'correct horse battery';
const WAIT = { timeout: 10_000 };

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

/// A new account, signed in in a browser context of its own.
async function person(username) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(server.url);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', PASSWORD);
  await page.click('button[value=register]');
  await page.waitForSelector('#chat:not([hidden])', WAIT);
  await page.waitForSelector('#status.live', WAIT);
  return page;
}

const tokenOf = (page) => page.evaluate(() => localStorage.getItem('confab.token'));

async function createRoom(page, name) {
  await page.fill('#new-room input[name=name]', name);
  await page.click('#new-room button');
  await page.waitForSelector(`#room-name:text-is("${name}")`, WAIT);
  return page.evaluate(() => document.querySelector('#my-rooms li.current').dataset.id);
}

async function say(page, text) {
  await page.fill('#composer textarea', text);
  await page.press('#composer textarea', 'Enter');
  await page.waitForSelector(`#messages li:has-text("${text}")`, WAIT);
}

/// My read state in a room, as the API tells it.
async function readState(page, roomId) {
  const { room } = await gql(server,
    'query($id: ID!) { room(id: $id) { unreadCount mentionCount lastReadMessageId lastMessage { id } } }',
    { id: roomId }, await tokenOf(page));
  return room;
}

/// The page's `markRead` requests, with when each was sent, and the markers it was answered for.
function recordMarkReads(page) {
  const log = { sent: [], answered: [] };
  page.on('request', (request) => {
    if (isMarkRead(request)) log.sent.push({ at: Date.now(), ...variablesOf(request) });
  });
  page.on('response', (response) => {
    if (isMarkRead(response.request())) log.answered.push(variablesOf(response.request()).m);
  });
  return log;
}

const isMarkRead = (request) => request.method() === 'POST' && request.url().endsWith('/graphql')
  && (request.postData() || '').includes('markRead(');
const variablesOf = (request) => JSON.parse(request.postData()).variables;

/// Waits until the page has had an answer to marking `messageId` read.
async function markedRead(page, log, messageId) {
  const answer = page.waitForResponse((response) => isMarkRead(response.request())
    && variablesOf(response.request()).m === messageId, WAIT);
  if (log.answered.includes(messageId)) {
    answer.catch(() => {});
    return;
  }
  await answer;
}

test('unread and mention badges for another room; opening it marks it read; a mention of me is highlighted', async () => {
  const ada = await person('ada');
  const bob = await person('bob');
  const marks = recordMarkReads(ada);

  const general = await createRoom(bob, 'general');
  await ada.reload();
  await ada.click('#all-rooms li:has-text("general") button:text("Join")');
  await ada.waitForSelector('#room-name:text-is("general")', WAIT);
  await createRoom(ada, 'quiet corner');
  const badges = ada.locator(`#my-rooms li[data-id="${general}"] .badge.count`);
  assert.equal(await badges.count(), 0, 'nothing unread yet');

  // Bob writes in general while Ada is in another room.
  await say(bob, 'first news');
  await say(bob, 'second news');
  await say(ada, 'anyone around?');
  // The page hears of them live (myEvents), with the room's counts.
  const unread = ada.locator(`#my-rooms li[data-id="${general}"] .badge.unread`);
  const mention = ada.locator(`#my-rooms li[data-id="${general}"] .badge.mention`);
  await ada.waitForSelector(`#my-rooms li[data-id="${general}"] .badge.unread:text-is("2")`, WAIT);
  assert.equal(await mention.count(), 0, 'no mention badge without a mention');
  assert.equal(await ada.locator('#my-rooms li:has-text("quiet corner") .badge.count').count(), 0,
    'her own messages are not unread');

  // Bob mentions her; the count of mentions comes live too.
  await say(bob, 'can you review this, @ada?');
  await ada.waitForSelector(`#my-rooms li[data-id="${general}"] .badge.mention:text-is("@1")`, WAIT);
  assert.equal(await unread.textContent(), '3');
  assert.equal(await ada.locator(`#my-rooms li[data-id="${general}"]`).getAttribute('class'), 'unread mentioned');
  await ada.screenshot({ path: `${ARTIFACTS}/unread-badges.png` });
  const before = await readState(ada, general);
  assert.equal(before.unreadCount, 3);
  assert.equal(before.mentionCount, 1);
  assert.deepEqual(marks.sent, [], 'nothing is marked read while Ada is elsewhere, nor her own messages');

  // Opening general shows the mention highlighted and clears both badges.
  await ada.click(`#my-rooms li[data-id="${general}"] .name`);
  const mentioned = ada.locator('#messages li.mentions-me');
  await mentioned.waitFor(WAIT);
  assert.match(await mentioned.textContent(), /can you review this, @ada\?/);
  assert.equal(await mentioned.locator('strong.mention.me').textContent(), '@ada');
  assert.equal(await ada.locator('#messages li.mentions-me').count(), 1, 'only the message that mentions her');
  await badges.first().waitFor({ state: 'detached', ...WAIT });
  assert.equal(await ada.locator(`#my-rooms li[data-id="${general}"]`).getAttribute('class'), 'current');
  await ada.screenshot({ path: `${ARTIFACTS}/unread-mention-highlighted.png` });

  // The server agrees: markRead was called with the newest message.
  const after = await readState(ada, general);
  assert.equal(after.unreadCount, 0);
  assert.equal(after.mentionCount, 0);
  assert.equal(after.lastReadMessageId, after.lastMessage.id);

  // Bob's page emphasises the name he mentioned, but the message does not mention him.
  const his = bob.locator('#messages li:has-text("can you review this")');
  assert.equal(await his.locator('strong.mention').textContent(), '@ada');
  assert.equal(await his.locator('strong.mention.me').count(), 0);
  assert.equal(await bob.locator('#messages li.mentions-me').count(), 0);

  // Messages arriving in the open room are marked read as they come into view, at most
  // about once a second however fast they come: Bob sends one as soon as Ada's page shows the
  // one before, for two and a half seconds.
  const bobToken = await tokenOf(bob);
  const started = Date.now();
  let last = null;
  for (let i = 1; i <= 200 && Date.now() - started < 2_500; i += 1) {
    const { sendMessage } = await gql(server, 'mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }',
      { r: general, b: `quick ${i}` }, bobToken);
    last = sendMessage.id;
    await ada.waitForSelector(`#messages li[data-id="${last}"]`, WAIT);
  }
  await markedRead(ada, marks, last);
  const live = await readState(ada, general);
  assert.equal(live.unreadCount, 0);
  assert.equal(live.lastReadMessageId, last);
  assert.ok(marks.sent.every((mark) => mark.r === general));
  assert.ok(marks.sent.length >= 3, `${marks.sent.length} markRead calls`);
  for (let i = 1; i < marks.sent.length; i += 1) {
    const apart = marks.sent[i].at - marks.sent[i - 1].at;
    assert.ok(apart >= 800, `markRead calls ${apart} ms apart`);
  }
  assert.equal(await badges.count(), 0);

  for (const page of [ada, bob]) assert.equal(await page.isVisible('#error'), false, await page.textContent('#error'));
  await ada.context().close();
  await bob.context().close();
});

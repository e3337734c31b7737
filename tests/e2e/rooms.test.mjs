// Rooms for teams in the chat page, in real headless Chromium (Debian's, driven by
// playwright-core): a private room that others cannot see, an invitation by username accepted
// from the page, a moderator deleting someone else's message, a direct message from the member
// list, role badges, and a kick and a ban that the removed person's page hears of at once.
// Every wait is on something the page shows. Screenshots go to tests/e2e/artifacts/.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { gql, launchChromium, startConfab } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);
const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;
const PASSWORD = 'correct horse battery';

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

/// A new account, signed in in a browser context of its own. Confirmations are accepted;
/// a prompt is answered with `page.reply` (empty by default).
async function person(username, viewport = { width: 1100, height: 760 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.reply = '';
  page.on('dialog', (dialog) => dialog.accept(dialog.type() === 'prompt' ? page.reply : undefined));
  await page.goto(server.url);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', PASSWORD);
  await page.click('button[value=register]');
  await page.waitForSelector('#chat:not([hidden])');
  await page.waitForSelector('#status.live');
  return page;
}

/// The access token the page holds (it keeps it for GraphiQL too).
const tokenOf = (page) => page.evaluate(() => localStorage.getItem('confab.token'));

async function createRoom(page, name, { topic = '', isPrivate = false } = {}) {
  await page.fill('#new-room input[name=name]', name);
  await page.fill('#new-room input[name=topic]', topic);
  await page.setChecked('#new-room input[name=private]', isPrivate);
  await page.click('#new-room button');
  await page.waitForSelector(`#room-name:text-is("${name}")`);
  return page.evaluate(() => document.querySelector('#my-rooms li.current').dataset.id);
}

async function joinFromDirectory(page, name) {
  await page.reload();
  await page.waitForSelector('#status.live');
  await page.click(`#all-rooms li:has-text("${name}") button:text("Join")`);
  await page.waitForSelector(`#room-name:text-is("${name}")`);
}

async function say(page, text) {
  await page.fill('#composer textarea', text);
  await page.press('#composer textarea', 'Enter');
  await page.waitForSelector(`#messages li:has-text("${text}")`);
}

/// Opens the member list of the room shown.
async function showMembers(page) {
  if (await page.isHidden('#people')) await page.click('#members');
  await page.waitForSelector('#people:not([hidden])');
}

const member = (page, username) => page.locator('#member-list li', { has: page.locator(`.name:text-is("${username}")`) });

test('a private room: hidden from others, an invitation by username, a moderator deletes a message', async () => {
  const ada = await person('ada');
  const bob = await person('bob');
  // Bob is in a public room of his own: that is how Ada's page can find him by name.
  await createRoom(bob, 'bobs corner');
  await createRoom(ada, 'lobby');
  const secret = await createRoom(ada, 'secret plans', { topic: 'Q3 roadmap', isPrivate: true });

  // The lock and the topic, in the header and the room list.
  await ada.waitForSelector('#room-lock:not([hidden])');
  assert.equal(await ada.textContent('#room-topic'), 'Q3 roadmap');
  assert.equal(await ada.locator('#my-rooms li:has-text("secret plans") .lock').count(), 1);
  assert.equal(await ada.locator('#my-rooms li:has-text("lobby") .lock').count(), 0, 'no lock on a public room');
  await showMembers(ada);
  await member(ada, 'ada').locator('.badge:text-is("OWNER")').waitFor();

  // Bob's directory lists the public room, not the private one, and the server hides it.
  await bob.reload();
  await bob.waitForSelector('#all-rooms li:has-text("lobby")');
  assert.equal(await bob.locator('#sidebar li:has-text("secret plans")').count(), 0);
  const hidden = await gql(server, 'query($id: ID!) { room(id: $id) { id } }', { id: secret }, await tokenOf(bob));
  assert.equal(hidden.room, null);

  // Ada invites Bob by his username.
  await ada.fill('#invite input[name=username]', 'bob');
  await ada.click('#invite button');
  await ada.waitForSelector('#invite-result:text-is("Invited bob.")');
  assert.equal(await ada.isVisible('#error'), false, await ada.textContent('#error'));

  // Bob sees the invitation (with its lock and inviter) and joins.
  await bob.reload();
  const invitation = bob.locator('#invitations li:has-text("secret plans")');
  await invitation.waitFor();
  assert.match(await invitation.textContent(), /from ada/);
  assert.equal(await invitation.locator('.lock').count(), 1);
  await bob.screenshot({ path: `${ARTIFACTS}/rooms-invitation.png` });
  await invitation.locator('button:text("Join")').click();
  await bob.waitForSelector('#room-name:text-is("secret plans")');
  await bob.waitForSelector('#room-lock:not([hidden])');
  await bob.waitForSelector('#invitations-box', { state: 'hidden' });
  await ada.waitForSelector('#messages li.notice:has-text("bob joined")');
  await ada.waitForSelector('#members:text-is("2 members")');

  // Bob's message: Ada, the owner, may delete it; Bob may not delete Ada's.
  await say(ada, 'Welcome to the plans');
  await bob.waitForSelector('#messages li:has-text("Welcome to the plans")');
  await say(bob, 'Buy cheap watches here');
  const spam = ada.locator('#messages li:has-text("Buy cheap watches here")');
  await spam.waitFor();
  await spam.locator('button:text("Delete")').waitFor();
  assert.equal(await spam.locator('button:text("Edit")').count(), 0, 'a moderator deletes, never edits');
  assert.equal(await bob.locator('#messages li:has-text("Welcome to the plans") button').count(), 0);
  await ada.screenshot({ path: `${ARTIFACTS}/rooms-moderator.png` });

  await spam.locator('button:text("Delete")').click();
  await bob.waitForSelector('#messages li:has-text("Buy cheap watches here")', { state: 'detached' });
  await bob.waitForSelector('#messages li.deleted:has(.author:text-is("bob")) .body:text-is("message deleted by ada")');
  await ada.waitForSelector('#messages li:has-text("Buy cheap watches here")', { state: 'detached' });
  assert.equal(await bob.locator('#messages li:has-text("Welcome to the plans")').count(), 1);
  await bob.screenshot({ path: `${ARTIFACTS}/rooms-deleted-by-moderator.png` });

  // The deletion is in the room's moderation log, with its author and moderator.
  const { moderationLog } = await gql(server,
    'query($r: ID!) { moderationLog(roomId: $r) { edges { node { action actor { username } target { username } } } } }',
    { r: secret }, await tokenOf(ada));
  assert.deepEqual(moderationLog.edges.map((e) => e.node),
    [{ action: 'MESSAGE_DELETE', actor: { username: 'ada' }, target: { username: 'bob' } }]);

  // An invitation declined is gone, and the room stays hidden.
  const adaToken = await tokenOf(ada);
  const { createRoom: side } = await gql(server,
    'mutation { createRoom(name: "side project", visibility: PRIVATE) { id } }', {}, adaToken);
  await gql(server, 'mutation($r: ID!, $u: ID!) { inviteToRoom(roomId: $r, userId: $u) { createdAt } }',
    { r: side.id, u: await member(ada, 'bob').getAttribute('data-id') }, adaToken);
  await bob.reload();
  await bob.locator('#invitations li:has-text("side project") button:text("Decline")').click();
  await bob.waitForSelector('#invitations-box', { state: 'hidden' });
  assert.deepEqual((await gql(server, '{ invitations { createdAt } }', {}, await tokenOf(bob))).invitations, []);
  assert.equal(await bob.locator('#sidebar li:has-text("side project")').count(), 0);

  for (const page of [ada, bob]) assert.equal(await page.isVisible('#error'), false, await page.textContent('#error'));
  await ada.context().close();
  await bob.context().close();
});

test('a direct message from the member list opens a room named after the other person', async () => {
  const carol = await person('carol');
  const dave = await person('dave');
  await createRoom(carol, 'plaza');
  await joinFromDirectory(dave, 'plaza');
  await carol.waitForSelector('#members:text-is("2 members")');
  await showMembers(carol);
  assert.equal(await member(carol, 'carol').locator('button').count(), 0, 'no buttons for oneself');
  await member(carol, 'dave').locator('button:text("Message")').click();

  await carol.waitForSelector('#room-name:text-is("dave")');
  await carol.waitForSelector('#room-lock:not([hidden])');
  await carol.waitForSelector('#my-rooms li.current:has-text("dave") .lock');
  await showMembers(carol);
  await member(carol, 'dave').waitFor();
  assert.equal(await carol.locator('#member-list button').count(), 0, 'in a direct room: no Message, no moderation');
  assert.equal(await carol.isVisible('#invite'), false, 'nobody is invited to a direct room');
  await say(carol, 'Just between us');

  // Dave's page names the room after Carol.
  await dave.reload();
  await dave.click('#my-rooms li:has-text("carol") span');
  await dave.waitForSelector('#room-name:text-is("carol")');
  await dave.waitForSelector('#messages li:has-text("Just between us")');
  // The same room again from Dave's side.
  await dave.click('#my-rooms li:has-text("plaza") span');
  await dave.waitForSelector('#room-name:text-is("plaza")');
  await showMembers(dave);
  await member(dave, 'carol').locator('button:text("Message")').click();
  await dave.waitForSelector('#room-name:text-is("carol")');
  await dave.waitForSelector('#messages li:has-text("Just between us")');
  assert.equal(await dave.locator('#my-rooms li:has-text("carol")').count(), 1);
  await dave.screenshot({ path: `${ARTIFACTS}/rooms-direct.png` });
  await carol.context().close();
  await dave.context().close();
});

test('roles: badges and moderation by rank; a kicked and a banned member\'s pages are told', async () => {
  const erin = await person('erin');
  const frank = await person('frank');
  const grace = await person('grace', { width: 390, height: 760 }); // a phone-sized window
  const square = await createRoom(erin, 'town square');
  await joinFromDirectory(frank, 'town square');
  await joinFromDirectory(grace, 'town square');
  await erin.waitForSelector('#members:text-is("3 members")');
  await say(erin, 'Rules: be kind');
  await say(frank, 'hello all');

  // Plain members moderate nothing.
  await grace.waitForSelector('#messages li:has-text("hello all")');
  assert.equal(await grace.locator('#messages li:has-text("hello all") button').count(), 0);
  await showMembers(grace);
  await member(grace, 'erin').locator('.badge:text-is("OWNER")').waitFor();
  assert.equal(await grace.locator('#member-list button:text("Kick")').count(), 0);

  // Erin makes Grace an admin: her badge shows, and she may act on Frank but not on Erin.
  await gql(server, 'mutation($r: ID!, $u: ID!) { setMemberRole(roomId: $r, userId: $u, role: ADMIN) { role } }',
    { r: square, u: await member(erin, 'grace').getAttribute('data-id') }, await tokenOf(erin));
  await grace.waitForSelector('#messages li.notice:text-is("You are now admin")');
  await member(grace, 'grace').locator('.badge:text-is("ADMIN")').waitFor();
  await member(grace, 'frank').locator('button:text("Kick")').waitFor();
  assert.equal(await member(grace, 'frank').locator('button:text("Ban")').count(), 1);
  assert.equal(await member(grace, 'erin').locator('button:text("Kick")').count(), 0, 'an admin does not act on the owner');
  await grace.locator('#messages li:has-text("hello all") button:text("Delete")').waitFor();
  assert.equal(await grace.locator('#messages li:has-text("Rules: be kind") button').count(), 0);
  await grace.screenshot({ path: `${ARTIFACTS}/rooms-admin-phone.png` });
  await showMembers(erin);
  await member(erin, 'grace').locator('.badge:text-is("ADMIN")').waitFor();

  // A new topic reaches every member's page live.
  assert.equal(await frank.isVisible('#room-topic'), false, 'no topic yet');
  await gql(server, 'mutation($r: ID!) { updateRoom(roomId: $r, topic: "Be excellent to each other") { id } }',
    { r: square }, await tokenOf(erin));
  await frank.waitForSelector('#room-topic:text-is("Be excellent to each other")');
  await grace.waitForSelector('#room-topic:text-is("Be excellent to each other")');

  // Grace kicks Frank: his page leaves the room and says so; the others see him go.
  await member(grace, 'frank').locator('button:text("Kick")').click();
  await frank.waitForSelector('#error:has-text("You were removed from town square by grace.")');
  await frank.waitForSelector('#room-name:text-is("Pick a room")');
  assert.equal(await frank.isVisible('#composer'), false);
  await frank.waitForSelector('#all-rooms li:has-text("town square")'); // back in the directory
  await erin.waitForSelector('#messages li.notice:text-is("frank was removed by grace")');
  await erin.waitForSelector('#members:text-is("2 members")');
  await frank.screenshot({ path: `${ARTIFACTS}/rooms-kicked.png` });

  // Erin, the owner, bans Grace, the admin, with a reason.
  erin.reply = 'posting spam';
  await member(erin, 'grace').locator('button:text("Ban")').click();
  await grace.waitForSelector('#error:has-text("You were removed from town square by erin (banned: posting spam).")');
  // On a phone-sized window, back to the list of rooms.
  await grace.waitForSelector('#chat:not(.in-room) #all-rooms li:has-text("town square")');
  assert.equal(await grace.textContent('#room-name'), 'Pick a room');
  await erin.waitForSelector('#messages li.notice:text-is("grace was banned by erin: posting spam")');
  await erin.waitForSelector('#members:text-is("1 member")');
  // A ban keeps her out.
  await grace.click('#all-rooms li:has-text("town square") button:text("Join")');
  await grace.waitForSelector('#error:has-text("banned")');
  assert.equal(await grace.isVisible('#composer'), false);

  const { moderationLog } = await gql(server,
    'query($r: ID!) { moderationLog(roomId: $r) { edges { node { action actor { username } target { username } reason } } } }',
    { r: square }, await tokenOf(erin));
  assert.deepEqual(moderationLog.edges.map((e) => [e.node.action, e.node.actor.username, e.node.target?.username]),
    [['BAN', 'erin', 'grace'], ['KICK', 'grace', 'frank'], ['ROOM_UPDATE', 'erin', undefined], ['ROLE_CHANGE', 'erin', 'grace']]);
  assert.equal(moderationLog.edges[0].node.reason, 'posting spam');
  for (const page of [erin, frank, grace]) await page.context().close();
});

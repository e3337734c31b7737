// The chat page on one `myEvents` subscription, in real headless Chromium (Debian's, driven by
// playwright-core): the room list's badges follow messages in rooms that are not open with no
// reading of the list (every GraphQL request the page makes is watched), an invitation and a
// removal show up live, a room joined on another device appears, and a reconnect during which
// messages arrive in three rooms resumes from the last cursor: the right badges, each message
// of the open room once; a cursor the server refuses makes it read its rooms again. Presence
// dots for members and a direct room's other person. Other people act over HTTP. Every wait is on something the page shows
// or sends, with a bound. Screenshots go to tests/e2e/artifacts/.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { gql, launchChromium, register, startConfab } from './confab.mjs';

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

/// A new account, signed in in a browser context of its own, with `setup(context)` run before
/// the page loads. `page.graphql` lists the GraphQL requests it makes over HTTP.
async function person(username, setup = async () => {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  await setup(context);
  const page = await context.newPage();
  page.graphql = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url().endsWith('/graphql')) page.graphql.push(request.postData() || '');
  });
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(server.url);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', PASSWORD);
  await page.click('button[value=register]');
  await page.waitForSelector('#chat:not([hidden])', WAIT);
  await page.waitForSelector('#status.live', WAIT);
  const { me } = await gql(server, '{ me { id } }', {}, await tokenOf(page));
  page.userId = me.id;
  return page;
}

const tokenOf = (page) => page.evaluate(() => localStorage.getItem('confab.token'));
/// How many times the page has read the room list (`myRooms`) since `from` requests.
const listReads = (page, from = 0) => page.graphql.slice(from).filter((body) => body.includes('myRooms(')).length;

async function createRoom(user, name, visibility = 'PUBLIC') {
  const { createRoom: room } = await gql(server, 'mutation($n: String!, $v: RoomVisibility) { createRoom(name: $n, visibility: $v) { id } }',
    { n: name, v: visibility }, user.token);
  return room.id;
}

const join = async (page, roomId) => gql(server, 'mutation($r: ID!) { joinRoom(roomId: $r) { id } }', { r: roomId }, await tokenOf(page));

async function send(user, roomId, body) {
  const { sendMessage } = await gql(server, 'mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }',
    { r: roomId, b: body }, user.token);
  return sendMessage.id;
}

/// Reloads the page (it reads the room list afresh) and opens `roomId`.
async function reloadAndOpen(page, roomId) {
  await page.reload();
  await page.waitForSelector('#status.live', WAIT);
  await page.click(`#my-rooms li[data-id="${roomId}"] .name`);
  await page.waitForSelector(`#my-rooms li.current[data-id="${roomId}"]`, WAIT);
}

const badge = (page, roomId, kind) => `#my-rooms li[data-id="${roomId}"] .badge.${kind}`;

function assertNoError(page) {
  return page.isVisible('#error').then(async (shown) => assert.equal(shown, false, await page.textContent('#error')));
}

test('badges of a room that is not open follow its messages live, with no reading of the room list', async () => {
  const bob = await register(server, 'bob');
  const ada = await person('ada');
  const general = await createRoom(bob, 'general');
  await join(ada, general);
  const quiet = await createRoom({ token: await tokenOf(ada) }, 'quiet corner');
  await reloadAndOpen(ada, quiet);
  const from = ada.graphql.length;

  // Bob writes in general while Ada reads the quiet corner.
  await send(bob, general, 'first news');
  await ada.waitForSelector(`${badge(ada, general, 'unread')}:text-is("1")`, WAIT);
  const mention = await send(bob, general, 'can you look, @ada?');
  await ada.waitForSelector(`${badge(ada, general, 'unread')}:text-is("2")`, WAIT);
  await ada.waitForSelector(`${badge(ada, general, 'mention')}:text-is("@1")`, WAIT);
  await ada.screenshot({ path: `${ARTIFACTS}/inbox-badges.png` });

  // She reads it on another device: the badges go.
  await gql(server, 'mutation($r: ID!, $m: ID!) { markRead(roomId: $r, messageId: $m) { id } }', { r: general, m: mention }, await tokenOf(ada));
  await ada.locator(`#my-rooms li[data-id="${general}"] .badge.count`).first().waitFor({ state: 'detached', ...WAIT });
  assert.equal(listReads(ada, from), 0, 'the counts came without reading the room list again');

  // A room she joins on another device shows up with its first message.
  const annex = await createRoom(bob, 'annex');
  await join(ada, annex);
  await send(bob, annex, 'welcome to the annex');
  await ada.waitForSelector(`${badge(ada, annex, 'unread')}:text-is("1")`, WAIT);
  await ada.waitForSelector(`#my-rooms li[data-id="${annex}"] .name:text-is("annex")`, WAIT);

  // So does a direct room Bob writes in, with a dot saying he is offline (he has no socket).
  const { directRoom } = await gql(server, 'mutation($u: ID!) { directRoom(userId: $u) { id } }', { u: ada.userId }, bob.token);
  await send(bob, directRoom.id, 'psst');
  await ada.waitForSelector(`#my-rooms li[data-id="${directRoom.id}"]:has-text("bob") i.presence.offline[data-user="${bob.id}"]`, WAIT);

  // Members show whether they are online: Ada's page has a socket open, Bob none.
  await ada.click(`#my-rooms li[data-id="${general}"] .name`);
  await ada.click('#members');
  await ada.waitForSelector(`#member-list li[data-id="${ada.userId}"] i.presence.online`, WAIT);
  await ada.waitForSelector(`#member-list li[data-id="${bob.id}"] i.presence.offline`, WAIT);
  await assertNoError(ada);
  await ada.context().close();
});

test('an invitation appears live', async () => {
  const carol = await register(server, 'carol');
  const dan = await person('dan');
  const from = dan.graphql.length;
  const secret = await createRoom(carol, 'secret plans', 'PRIVATE');
  await gql(server, 'mutation($r: ID!, $u: ID!) { inviteToRoom(roomId: $r, userId: $u) { createdAt } }',
    { r: secret, u: dan.userId }, carol.token);
  await dan.waitForSelector(`#invitations-box:not([hidden]) #invitations li[data-id="${secret}"]:has-text("from carol")`, WAIT);
  assert.equal(listReads(dan, from), 0);
  // Accepting it from the page opens the room.
  await dan.click(`#invitations li[data-id="${secret}"] button:text("Join")`);
  await dan.waitForSelector('#room-name:text-is("secret plans")', WAIT);
  await assertNoError(dan);
  await dan.context().close();
});

test('a room I am kicked from, or leave on another device, leaves the list live', async () => {
  const erin = await register(server, 'erin');
  const finn = await person('finn');
  const club = await createRoom(erin, 'club');
  const hall = await createRoom(erin, 'hall');
  await join(finn, club);
  await join(finn, hall);
  await reloadAndOpen(finn, hall);

  // Kicked from a room that is not open: it goes from his rooms, back to the directory.
  await gql(server, 'mutation($r: ID!, $u: ID!) { kickMember(roomId: $r, userId: $u) }', { r: club, u: finn.userId }, erin.token);
  await finn.locator(`#my-rooms li[data-id="${club}"]`).waitFor({ state: 'detached', ...WAIT });
  await finn.waitForSelector(`#all-rooms li[data-id="${club}"] button:text("Join")`, WAIT);
  assert.equal(await finn.textContent('#room-name'), 'hall', 'the open room stays open');

  // He leaves the open room on another device: the page closes it and says so.
  await gql(server, 'mutation($r: ID!) { leaveRoom(roomId: $r) }', { r: hall }, await tokenOf(finn));
  await finn.waitForSelector('#error:has-text("You left hall on another device.")', WAIT);
  await finn.waitForSelector('#room-name:text-is("Pick a room")', WAIT);
  assert.equal(await finn.locator(`#my-rooms li[data-id="${hall}"]`).count(), 0);
  await finn.context().close();
});

/// A new account whose page's sockets all go through the test, which can take the connection
/// away (`drop`: the page's socket closes, and new ones open to the page but reach no server)
/// and give it back (`restore`). `subscribes` lists what the page subscribes to.
async function linkedPerson(username) {
  const link = { down: false, held: [], sockets: [], subscribes: [] };
  const page = await person(username, (context) => context.routeWebSocket(/\/graphql$/, (ws) => {
    if (link.down) {
      link.held.push(ws);
      return;
    }
    link.sockets.push(ws);
    const upstream = ws.connectToServer();
    ws.onMessage((message) => {
      const parsed = JSON.parse(message);
      if (parsed.type === 'subscribe') link.subscribes.push(parsed.payload);
      upstream.send(message);
    });
    upstream.onMessage((message) => ws.send(message));
  }));
  link.drop = async () => {
    link.down = true;
    await link.sockets.at(-1).close({ code: 4000, reason: 'test' });
    await page.waitForSelector('#status.reconnecting', WAIT);
  };
  link.restore = async () => {
    link.down = false;
    for (const ws of link.held.splice(0)) await ws.close({ code: 4000, reason: 'test' });
    await page.waitForSelector('#status.live', WAIT);
  };
  return { page, link };
}

const inboxSubscribes = (link, from) => link.subscribes.slice(from).filter((payload) => payload.query.includes('myEvents'));

test('a reconnect resumes from the last cursor: the right badges, each message of the open room once', async () => {
  const gus = await register(server, 'gus');
  const { page: hana, link } = await linkedPerson('hana');
  const lobby = await createRoom(gus, 'lobby');
  const general = await createRoom(gus, 'news');
  const annex = await createRoom(gus, 'backroom');
  for (const room of [lobby, general, annex]) await join(hana, room);
  await reloadAndOpen(hana, lobby);
  await send(gus, lobby, 'before the break');
  await hana.waitForSelector('#messages li:has-text("before the break")', WAIT);
  await send(gus, general, 'general before');
  await hana.waitForSelector(`${badge(hana, general, 'unread')}:text-is("1")`, WAIT);
  const cursor = await hana.evaluate((id) => sessionStorage.getItem(`confab.cursor.${id}`), hana.userId);
  assert.ok(cursor, 'the last cursor is kept');
  const from = hana.graphql.length;
  const subscribed = link.subscribes.length;

  // The connection drops; messages arrive in three rooms meanwhile.
  await link.drop();
  await send(gus, lobby, 'while away 1');
  await send(gus, general, 'general while away');
  await send(gus, annex, 'annex while away 1');
  await send(gus, annex, 'annex while away 2');
  await send(gus, lobby, 'while away 2');

  // Back: the page resumes after its cursor.
  await link.restore();
  await hana.waitForSelector(`${badge(hana, general, 'unread')}:text-is("2")`, WAIT);
  await hana.waitForSelector(`${badge(hana, annex, 'unread')}:text-is("2")`, WAIT);
  await hana.waitForSelector('#messages li:has-text("while away 2")', WAIT);
  for (const text of ['before the break', 'while away 1', 'while away 2']) {
    assert.equal(await hana.locator(`#messages li[data-id]:has-text("${text}")`).count(), 1, text);
  }
  const [resumed] = inboxSubscribes(link, subscribed);
  assert.ok(resumed, 'myEvents subscribed again');
  assert.ok(resumed.variables.after, 'with the cursor of the last event');
  assert.equal(listReads(hana, from), 0, 'nothing read again but what was missed');

  // Live after it, too.
  await send(gus, annex, 'annex after');
  await hana.waitForSelector(`${badge(hana, annex, 'unread')}:text-is("3")`, WAIT);
  await hana.screenshot({ path: `${ARTIFACTS}/inbox-resumed.png` });
  await assertNoError(hana);
  await hana.context().close();
});

test('a cursor the server refuses: the page reads its rooms again and follows anew', async () => {
  const jon = await register(server, 'jon');
  const { page: ivy, link } = await linkedPerson('ivy');
  const plaza = await createRoom(jon, 'plaza');
  const yard = await createRoom(jon, 'yard');
  for (const room of [plaza, yard]) await join(ivy, room);
  await reloadAndOpen(ivy, plaza);
  await send(jon, yard, 'yard before');
  await ivy.waitForSelector(`${badge(ivy, yard, 'unread')}:text-is("1")`, WAIT);
  const from = ivy.graphql.length;
  const subscribed = link.subscribes.length;

  // The cursor kept is one the server will not take (as when it is older than it keeps).
  await ivy.evaluate((id) => sessionStorage.setItem(`confab.cursor.${id}`, 'not a cursor'), ivy.userId);
  await link.drop();
  await send(jon, yard, 'yard while away 1');
  await send(jon, yard, 'yard while away 2');
  await link.restore();

  await ivy.waitForSelector(`${badge(ivy, yard, 'unread')}:text-is("3")`, WAIT);
  const afters = inboxSubscribes(link, subscribed).map((payload) => payload.variables.after);
  assert.deepEqual(afters, ['not a cursor', null], 'refused, then followed anew');
  assert.ok(listReads(ivy, from) >= 1, 'the room list was read again');
  await send(jon, yard, 'yard after');
  await ivy.waitForSelector(`${badge(ivy, yard, 'unread')}:text-is("4")`, WAIT);
  await assertNoError(ivy);
  await ivy.context().close();
});

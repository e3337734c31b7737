// The real socket.io-client 4.x against Confab's Socket.IO events: two clients chat, a GraphQL
// subscriber and a Socket.IO client see each other, bad tokens and non-members are refused.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { barrier, gql, register, startConfab, subscribe, wsClient } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 30_000 }, fn);

let server;
let ada;
let bob;
let room;

before(async () => {
  server = await startConfab();
  ada = await register(server, 'ada');
  bob = await register(server, 'bob');
  room = (await gql(server, 'mutation { createRoom(name: "socket room") { id } }', {}, ada.token)).createRoom.id;
});

after(async () => {
  await server?.stop();
});

/// A connected socket.io client signed in with `token`.
async function connect(token) {
  const socket = io(server.url, { auth: { token }, transports: ['websocket'], reconnection: false });
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}

/// The next `name` event's payload (the first one `wanted` accepts, when given).
const next = (socket, name, wanted = () => true) => new Promise((resolve) => {
  const listener = (payload) => {
    if (wanted(payload)) {
      socket.off(name, listener);
      resolve(payload);
    }
  };
  socket.on(name, listener);
});

test('two socket.io clients join a room and exchange messages', async () => {
  const a = await connect(ada.token);
  const b = await connect(bob.token);
  try {
    assert.equal((await a.emitWithAck('join', { roomID: room })).ok, true);
    const joined = next(a, 'user_join');
    const answer = await b.emitWithAck('join', { roomID: room });
    assert.equal(answer.ok, true, JSON.stringify(answer));
    assert.equal(answer.room.id, room);
    assert.equal((await joined).user.username, 'bob');

    // Everyone in the room gets a message, its sender too (listen before acting: the event
    // may arrive before the acknowledgement).
    const arriving = next(b, 'message', (m) => m.body === 'hello bob');
    const echoed = next(a, 'message', (m) => m.body === 'hello bob');
    const sent = await a.emitWithAck('message', { roomID: room, message: 'hello bob' });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    const received = await arriving;
    assert.equal(received.id, sent.message.id);
    assert.equal(received.body, 'hello bob');
    assert.equal(received.roomID, room);
    assert.equal(received.sender.username, 'ada');

    assert.equal((await echoed).id, sent.message.id);
    const viaContent = next(a, 'message', (m) => m.body === 'hi ada');
    assert.equal((await b.emitWithAck('message', { roomID: room, content: 'hi ada' })).ok, true);
    assert.equal((await viaContent).body, 'hi ada');

    const gone = next(b, 'delete_message', (d) => d.messageID === sent.message.id);
    const deleted = await a.emitWithAck('delete_message', { messageID: sent.message.id });
    assert.equal(deleted.ok, true, JSON.stringify(deleted));
    // Its author deleted it: no moderator to name.
    assert.deepEqual(await gone, { messageID: sent.message.id, roomID: room, deletedBy: null });
  } finally {
    a.disconnect();
    b.disconnect();
  }
});

test('GraphQL subscribers and socket.io clients see each other', async () => {
  const socket = await connect(bob.token);
  const client = wsClient(server, ada.token);
  try {
    assert.equal((await socket.emitWithAck('join', { roomID: room })).ok, true);
    const events = subscribe(client, `subscription($r: ID!) { roomEvents(roomId: $r) { __typename
      ... on MessageAdded { message { id body sender { username } } }
      ... on MessageDeleted { messageId } } }`, { r: room });
    await barrier(client);

    // Socket.IO → GraphQL.
    const sent = await socket.emitWithAck('message', { roomID: room, message: 'from socket.io' });
    assert.equal(sent.ok, true);
    const added = (await events.next()).data.roomEvents;
    assert.equal(added.__typename, 'MessageAdded');
    assert.equal(added.message.id, sent.message.id);
    assert.equal(added.message.sender.username, 'bob');

    // GraphQL → Socket.IO, and deletions both ways.
    const arriving = next(socket, 'message', (m) => m.body === 'from graphql');
    const viaGraphql = (await gql(server, 'mutation($r: ID!) { sendMessage(roomId: $r, body: "from graphql") { id } }', { r: room }, ada.token)).sendMessage.id;
    assert.equal((await arriving).id, viaGraphql);
    assert.equal((await events.next()).data.roomEvents.message.id, viaGraphql);

    const deletion = next(socket, 'delete_message', (d) => d.messageID === viaGraphql);
    await gql(server, 'mutation($m: ID!) { deleteMessage(messageId: $m) }', { m: viaGraphql }, ada.token);
    assert.equal((await deletion).messageID, viaGraphql);
    assert.equal((await events.next()).data.roomEvents.messageId, viaGraphql);

    assert.equal((await socket.emitWithAck('delete_message', { messageID: sent.message.id })).ok, true);
    assert.equal((await events.next()).data.roomEvents.messageId, sent.message.id);
  } finally {
    socket.disconnect();
    await client.dispose();
  }
});

test('a bad or missing token is refused with connect_error', async () => {
  for (const auth of [{ token: 'not-a-token' }, {}]) {
    const socket = io(server.url, { auth, transports: ['websocket'], reconnection: false });
    const error = await new Promise((resolve) => socket.once('connect_error', resolve));
    assert.match(error.message, /unauthenticated/);
    socket.disconnect();
  }
});

test('a non-member is refused with FORBIDDEN, and bad input with BAD_USER_INPUT', async () => {
  const eve = await register(server, 'eve');
  const socket = await connect(eve.token);
  try {
    const refused = await socket.emitWithAck('message', { roomID: room, message: 'let me in' });
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, 'FORBIDDEN');
    const bad = await socket.emitWithAck('join', { roomID: 'lobby' });
    assert.deepEqual([bad.ok, bad.error.code, bad.error.field], [false, 'BAD_USER_INPUT', 'roomID']);
    const missing = await socket.emitWithAck('message', { roomID: room });
    assert.deepEqual([missing.ok, missing.error.field], [false, 'message']);
  } finally {
    socket.disconnect();
  }
});

test('joining twice at once delivers each event once; a feed ended elsewhere restarts on join', async () => {
  const carol = await register(server, 'carol');
  const socket = await connect(carol.token);
  try {
    const [first, second] = await Promise.all([
      socket.emitWithAck('join', { roomID: room }),
      socket.emitWithAck('join', { roomID: room }),
    ]);
    assert.equal(first.ok && second.ok, true);
    const seen = [];
    socket.on('message', (m) => seen.push(m.id));
    const send = async (body) => (await gql(server, 'mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }', { r: room, b: body }, ada.token)).sendMessage.id;
    const sentinel = next(socket, 'message', (m) => m.body === 'sentinel');
    const once = await send('once');
    await send('sentinel');
    await sentinel;
    assert.deepEqual(seen.filter((id) => id === once), [once], 'delivered exactly once');

    // Carol leaves through GraphQL: her socket's feed ends with her user_leave.
    const left = next(socket, 'user_leave', (e) => e.user.username === 'carol');
    await gql(server, 'mutation($r: ID!) { leaveRoom(roomId: $r) }', { r: room }, carol.token);
    await left;
    // Joining again from the socket brings the room back.
    assert.equal((await socket.emitWithAck('join', { roomID: room })).ok, true);
    const back = next(socket, 'message', (m) => m.body === 'welcome back');
    await send('welcome back');
    assert.equal((await back).body, 'welcome back');
  } finally {
    socket.disconnect();
  }
});

// The original service's clients emit `join` in their `connect` callback. The server must have
// the socket's handlers in place before the client learns it is connected, or such an event is
// dropped silently: no acknowledgement, no error, and that user never joins. The race needs an
// idle server thread to send the CONNECT packet while the handlers are still being registered,
// so it shows at low concurrency (before the fix: a few to a few dozen lost per 2,000 cycles two
// at a time, only about 1 in 3,500 twenty at a time).
nodeTest('a join emitted in the connect callback is always acknowledged', { timeout: 90_000 }, async (t) => {
  const dave = await register(server, 'dave');
  const cycles = 2_000;
  const concurrency = 2;
  const deadline = Date.now() + 60_000;
  const lost = [];
  let started = 0;
  let acknowledged = 0;

  const cycle = () => new Promise((resolve) => {
    const socket = io(server.url, {
      auth: { token: dave.token }, transports: ['websocket'], reconnection: false, forceNew: true,
    });
    const done = (failure) => {
      if (failure) lost.push(failure);
      else acknowledged += 1;
      socket.disconnect();
      resolve();
    };
    socket.once('connect_error', (error) => done(`connect_error: ${error.message}`));
    socket.once('connect', () => {
      socket.timeout(5_000).emitWithAck('join', { roomID: room }).then(
        (answer) => done(answer?.ok === true && answer.room?.id === room ? null : `refused: ${JSON.stringify(answer)}`),
        (error) => done(`no acknowledgement: ${error.message}`),
      );
    });
  });

  const worker = async () => {
    while (started < cycles && Date.now() < deadline) {
      started += 1;
      await cycle();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));

  t.diagnostic(`${acknowledged} acknowledged, ${lost.length} lost of ${started}`);
  assert.deepEqual(lost, [], `${lost.length} of ${started} joins lost`);
  assert.equal(started, cycles, `only ${started} of ${cycles} cycles within the time bound`);
});

test('a socket.io client is disconnected when its session is revoked, and not for another one', async () => {
  const login = async () => (await gql(server,
    'mutation { login(username: "bob", password: "end to end password") { token } }')).login.token;
  const phone = await login();
  const laptop = await login();
  const a = await connect(phone);
  const b = await connect(laptop);
  try {
    const dropped = new Promise((resolve) => a.once('disconnect', resolve));
    assert.equal(await gql(server, 'mutation { logout }', {}, phone).then((d) => d.logout), true);
    // The server ends the socket (the client did not ask to leave).
    assert.equal(await dropped, 'io server disconnect');
    // The other session's socket still works.
    assert.equal((await b.emitWithAck('join', { roomID: room })).ok, true);
    // And the revoked token cannot connect again.
    await assert.rejects(connect(phone));
  } finally {
    a.disconnect();
    b.disconnect();
  }
});

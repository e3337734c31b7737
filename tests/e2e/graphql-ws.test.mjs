// The real `graphql-ws` client against Confab: sign in at connection_init, subscribe, receive,
// complete, ping, resume with `after`, and refusal of a bad token.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { barrier, gql, register, startConfab, subscribe, wsClient } from './confab.mjs';

// No test may hang CI: each fails after 30 s instead.
const test = (name, fn) => nodeTest(name, { timeout: 30_000 }, fn);

const ROOM_EVENTS = `subscription($r: ID!, $after: ID) { roomEvents(roomId: $r, after: $after) {
  __typename ... on MessageAdded { message { id body sender { username } } } } }`;
const SEND = 'mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }';

let server;
let ada;
let bob;
let room;

before(async () => {
  server = await startConfab();
  ada = await register(server, 'ada');
  bob = await register(server, 'bob');
  room = (await gql(server, 'mutation { createRoom(name: "e2e") { id } }', {}, ada.token)).createRoom.id;
  await gql(server, 'mutation($r: ID!) { joinRoom(roomId: $r) { id } }', { r: room }, bob.token);
});

after(async () => {
  await server?.stop();
});

test('a subscriber receives what another user sends, and complete stops it', async () => {
  const client = wsClient(server, bob.token);
  try {
    const events = subscribe(client, ROOM_EVENTS, { r: room });
    await barrier(client);
    await gql(server, SEND, { r: room, b: 'hello from ada' }, ada.token);
    const event = await events.next();
    assert.equal(event.data.roomEvents.__typename, 'MessageAdded');
    assert.equal(event.data.roomEvents.message.body, 'hello from ada');
    assert.equal(event.data.roomEvents.message.sender.username, 'ada');
    events.unsubscribe();
  } finally {
    await client.dispose();
  }
});

test('a client that reconnects with after misses nothing and gets nothing twice', async () => {
  const first = wsClient(server, bob.token);
  const live = subscribe(first, ROOM_EVENTS, { r: room });
  await barrier(first);
  const lastSeen = (await gql(server, SEND, { r: room, b: 'before the drop' }, ada.token)).sendMessage.id;
  assert.equal((await live.next()).data.roomEvents.message.id, lastSeen);
  await first.dispose();

  const missed = [];
  for (const body of ['missed 1', 'missed 2', 'missed 3']) {
    missed.push((await gql(server, SEND, { r: room, b: body }, ada.token)).sendMessage.id);
  }
  const second = wsClient(server, bob.token);
  try {
    const resumed = subscribe(second, ROOM_EVENTS, { r: room, after: lastSeen });
    const replayed = [];
    for (let i = 0; i < missed.length; i++) {
      replayed.push((await resumed.next()).data.roomEvents.message.id);
    }
    assert.deepEqual(replayed, missed);
    const next = (await gql(server, SEND, { r: room, b: 'live again' }, ada.token)).sendMessage.id;
    assert.equal((await resumed.next()).data.roomEvents.message.id, next);
  } finally {
    await second.dispose();
  }
});

test('keep-alive pings are answered with pongs', async () => {
  let resolvePong;
  const pong = new Promise((resolve) => { resolvePong = resolve; });
  const client = wsClient(server, ada.token, { keepAlive: 20, on: { pong: () => resolvePong(true) } });
  try {
    // A lazy client closes its socket when nothing is subscribed: keep a subscription open.
    const events = subscribe(client, ROOM_EVENTS, { r: room });
    await barrier(client);
    assert.equal(await pong, true);
    events.unsubscribe();
  } finally {
    await client.dispose();
  }
});

test('a bad token is refused with close code 4403', async () => {
  let resolveClosed;
  const closed = new Promise((resolve) => { resolveClosed = resolve; });
  const client = wsClient(server, 'not-a-token', { lazy: false, on: { closed: (event) => resolveClosed(event.code) } });
  try {
    assert.equal(await closed, 4403);
  } finally {
    await client.dispose();
  }
});

test('a non-member subscription fails with FORBIDDEN', async () => {
  const eve = await register(server, 'eve');
  const client = wsClient(server, eve.token);
  try {
    const events = subscribe(client, ROOM_EVENTS, { r: room });
    await assert.rejects(events.next(), (errors) => {
      assert.equal(errors[0].extensions.code, 'FORBIDDEN');
      return true;
    });
  } finally {
    await client.dispose();
  }
});

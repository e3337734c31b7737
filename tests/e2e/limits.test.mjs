// Rate limits as the original service's clients and graphql-ws clients meet them: a Socket.IO
// event over the limit is acknowledged with RATE_LIMITED and retryAfter, the same limit holds
// for GraphQL over a socket, and an anonymous graphql-ws client is refused at connection_init.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { gql, register, startConfab, subscribe, wsClient } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 30_000 }, fn);

let server;

before(async () => {
  server = await startConfab({ args: ['--rate-limits', 'on', '--limit-messages', '2/1h'] });
});

after(async () => {
  await server?.stop();
});

test('a Socket.IO message over the limit is acknowledged with RATE_LIMITED and retryAfter', async () => {
  const ada = await register(server, 'ada');
  const room = (await gql(server, 'mutation { createRoom(name: "limited") { id } }', {}, ada.token)).createRoom.id;
  const socket = io(server.url, { auth: { token: ada.token }, transports: ['websocket'], reconnection: false });
  try {
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    const joined = await socket.timeout(5_000).emitWithAck('join', { roomID: room });
    assert.equal(joined.ok, true, JSON.stringify(joined));
    for (const text of ['one', 'two']) {
      const sent = await socket.timeout(5_000).emitWithAck('message', { roomID: room, message: text });
      assert.equal(sent.ok, true, JSON.stringify(sent));
    }
    const refused = await socket.timeout(5_000).emitWithAck('message', { roomID: room, message: 'three' });
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, 'RATE_LIMITED');
    assert.ok(refused.error.retryAfter >= 1, JSON.stringify(refused));

    // The same allowance, whichever transport: GraphQL over graphql-ws is refused too.
    const client = wsClient(server, ada.token);
    try {
      const sub = subscribe(client, 'mutation($r: ID!) { sendMessage(roomId: $r, body: "four") { id } }', { r: room });
      const result = await sub.next();
      assert.equal(result.errors[0].extensions.code, 'RATE_LIMITED');
    } finally {
      await client.dispose();
    }
  } finally {
    socket.disconnect();
  }
});

test('an anonymous graphql-ws client is refused with 4403', async () => {
  const client = wsClient(server, null);
  try {
    const sub = subscribe(client, '{ __typename }');
    await assert.rejects(sub.next(), (error) => error.code === 4403);
  } finally {
    await client.dispose();
  }
});

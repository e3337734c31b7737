// More real GraphQL clients against Confab: Apollo Client (HTTP + GraphQLWsLink), urql
// (@urql/core + subscriptionExchange over graphql-ws), the legacy subscriptions-transport-ws
// client, and graphql-http's server audits.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ApolloClient, HttpLink, InMemoryCache, gql as apolloGql, split } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { Client as UrqlClient, cacheExchange, fetchExchange, subscriptionExchange } from '@urql/core';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import { serverAudits } from 'graphql-http';
import WebSocket from 'ws';
import { barrier, gql, register, startConfab, wsClient } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 30_000 }, fn);

const MESSAGE_ADDED = 'subscription($r: ID!) { messageAdded(roomId: $r) { id body sender { username } } }';
const SEND = 'mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }';

let server;
let ada;
let bob;
let room;

before(async () => {
  server = await startConfab();
  ada = await register(server, 'ada');
  bob = await register(server, 'bob');
  room = (await gql(server, 'mutation { createRoom(name: "clients") { id } }', {}, ada.token)).createRoom.id;
  await gql(server, 'mutation($r: ID!) { joinRoom(roomId: $r) { id } }', { r: room }, bob.token);
});

after(async () => {
  await server?.stop();
});

/// Waits (bounded) until the server runs exactly `count` WebSocket operations.
async function untilOperations(count) {
  for (let i = 0; i < 500; i++) {
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    if (metrics.includes(`confab_ws_operations ${count}\n`)) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`the server never ran ${count} WebSocket operation(s)`);
}

/// The first value an observable-like source produces.
const first = (source) => new Promise((resolve, reject) => {
  const subscription = source.subscribe({
    next: (value) => { resolve(value); queueMicrotask(() => subscription.unsubscribe()); },
    error: reject,
  });
});

test('Apollo Client: log in, query rooms, a live subscription, and the cache after a mutation', async () => {
  const anonymous = new ApolloClient({ link: new HttpLink({ uri: `${server.url}/graphql` }), cache: new InMemoryCache() });
  const { data: login } = await anonymous.mutate({
    mutation: apolloGql`mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }`,
    variables: { u: 'bob', p: 'end to end password' },
  });
  const token = login.login.token;

  const ws = wsClient(server, token);
  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
    },
    new GraphQLWsLink(ws),
    new HttpLink({ uri: `${server.url}/graphql`, headers: { authorization: `Bearer ${token}` } }),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  try {
    const { data } = await client.query({ query: apolloGql`{ rooms(first: 10) { edges { node { id name } } } }` });
    assert.ok(data.rooms.edges.some(({ node }) => node.id === room));

    const arriving = first(client.subscribe({ query: apolloGql(MESSAGE_ADDED), variables: { r: room } }));
    await barrier(ws);
    const sent = (await gql(server, SEND, { r: room, b: 'to apollo' }, ada.token)).sendMessage.id;
    const { data: event } = await arriving;
    assert.equal(event.messageAdded.id, sent);
    assert.equal(event.messageAdded.sender.username, 'ada');

    // Bob's own message in the normalized cache follows his edit.
    const mine = (await gql(server, SEND, { r: room, b: 'before' }, token)).sendMessage.id;
    await client.query({
      query: apolloGql`query($r: ID!) { messages(roomId: $r, last: 5) { edges { node { id body } } } }`,
      variables: { r: room },
    });
    await client.mutate({
      mutation: apolloGql`mutation($m: ID!) { editMessage(messageId: $m, body: "after") { id body } }`,
      variables: { m: mine },
    });
    const cached = client.readFragment({ id: `Message:${mine}`, fragment: apolloGql`fragment M on Message { body }` });
    assert.equal(cached.body, 'after');
  } finally {
    client.stop();
    await ws.dispose();
  }
});

test('urql: log in, query rooms, mutate, and a subscription over graphql-ws', async () => {
  const ws = wsClient(server, bob.token);
  const client = new UrqlClient({
    url: `${server.url}/graphql`,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${bob.token}` } }),
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query || '' }, sink) }),
        }),
      }),
    ],
  });
  try {
    const login = await client
      .mutation('mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { username } } }', { u: 'bob', p: 'end to end password' })
      .toPromise();
    assert.equal(login.data.login.user.username, 'bob', JSON.stringify(login.error));
    const rooms = await client.query('{ rooms(first: 10) { edges { node { id name } } } }', {}).toPromise();
    assert.ok(rooms.data.rooms.edges.some(({ node }) => node.id === room), JSON.stringify(rooms.error));
    const me = await client.query('{ me { username } }', {}).toPromise();
    assert.equal(me.data.me.username, 'bob', JSON.stringify(me.error));

    const arriving = new Promise((resolve) => {
      const { unsubscribe } = client.subscription(MESSAGE_ADDED, { r: room }).subscribe((result) => {
        if (result.data) {
          resolve(result.data.messageAdded);
          unsubscribe();
        }
      });
    });
    // urql may hand its subscription to the socket a tick later: wait until the server runs it.
    await untilOperations(1);
    const sent = await client.mutation(SEND, { r: room, b: 'to urql' }).toPromise();
    assert.equal(sent.error, undefined);
    const event = await arriving;
    assert.equal(event.id, sent.data.sendMessage.id);
    assert.equal(event.body, 'to urql');
  } finally {
    await ws.dispose();
  }
});

test('the legacy subscriptions-transport-ws client subscribes and receives', async () => {
  const client = new SubscriptionClient(
    `${server.url.replace(/^http/, 'ws')}/graphql`,
    { connectionParams: { authorization: `Bearer ${bob.token}` }, reconnect: false },
    WebSocket,
  );
  try {
    const arriving = first(client.request({ query: MESSAGE_ADDED, variables: { r: room } }));
    // The server reads a socket's messages in order, each once the subscriptions before it
    // are live: a query's answer on the same socket is the barrier.
    const me = await first(client.request({ query: '{ me { username } }' }));
    assert.equal(me.data.me.username, 'bob');
    const sent = (await gql(server, SEND, { r: room, b: 'old school' }, ada.token)).sendMessage.id;
    const event = await arriving;
    assert.equal(event.data.messageAdded.id, sent);
  } finally {
    client.close();
  }
});

test('graphql-http server audits: every MUST passes', async () => {
  const failures = { must: [], should: [] };
  for (const audit of serverAudits({ url: `${server.url}/graphql` })) {
    const result = await audit.fn();
    if (result.status !== 'ok') {
      const line = `${audit.name}: ${result.reason}`;
      (audit.name.startsWith('MUST') ? failures.must : failures.should).push(line);
    }
  }
  for (const line of failures.should) console.log(`# SHOULD not met: ${line}`);
  assert.deepEqual(failures.must, []);
});

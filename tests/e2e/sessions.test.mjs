// Sessions with the real `graphql-ws` client, as an application would use them: its
// `connectionParams` renews the access token when it has expired (or is about to), keeping the
// rotated refresh token; across the token's expiry and a reconnect it misses no message and gets
// none twice; a reconnect with the expired token is refused; and the socket closes with 4403
// when the session is revoked, after which renewal is refused too.
//
// The server's access tokens live 10 s (`--token-ttl 10s`), so expiry is real, not simulated.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { barrier, register, startConfab } from './confab.mjs';

const TOKEN_TTL = '10s';
// A token's wait for its expiry is most of each test's time.
const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);

const ROOM_EVENTS = `subscription($r: ID!, $after: ID) { roomEvents(roomId: $r, after: $after) {
  __typename ... on MessageAdded { message { id body } } } }`;
const SEND = 'mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }';
const REFRESH = `mutation($t: String!) { refreshSession(refreshToken: $t) {
  token refreshToken expiresAt } }`;

let server;

before(async () => {
  server = await startConfab({ args: ['--token-ttl', TOKEN_TTL] });
});

after(async () => {
  await server?.stop();
});

/// A GraphQL request over HTTP; its whole answer, errors included.
async function post(query, variables, token) {
  const response = await fetch(`${server.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

function codeOf(answer) {
  return answer.errors?.[0]?.extensions?.code;
}

/// What an application keeps of its session: the access token, its expiry, and the refresh
/// token, which is good once (each renewal hands out the next; a spent one presented again
/// revokes the session). Renewals never overlap: two at once would present the same token.
class Session {
  constructor({ token, refreshToken, expiresAt }) {
    Object.assign(this, { token, refreshToken, expiresAt });
    this.renewals = 0;
    this.refused = false; // set when the server refused the access token
    this.renewing = null;
  }

  /// An access token good for at least `margin` ms more, renewing first if need be.
  async fresh(margin = 2_000) {
    if (this.refused || this.expiresAt - Date.now() <= margin) await this.renew();
    return this.token;
  }

  renew() {
    this.renewing ??= (async () => {
      try {
        const answer = await post(REFRESH, { t: this.refreshToken });
        if (answer.errors) {
          const error = new Error(`renewal refused: ${answer.errors[0].message}`);
          error.code = codeOf(answer);
          throw error;
        }
        const { token, refreshToken, expiresAt } = answer.data.refreshSession;
        Object.assign(this, { token, refreshToken, expiresAt: Date.parse(expiresAt), refused: false });
        this.renewals += 1;
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }
}

/// `n` ms, waited for a clock (the token's expiry), not for something to happen.
const sleep = (n) => new Promise((resolve) => setTimeout(resolve, n));

/// What a subscription delivers, awaited by count.
function inbox() {
  const ids = [];
  let failure = null;
  let wake = () => {};
  return {
    ids,
    get failure() { return failure; },
    push(id) { ids.push(id); wake(); },
    fail(error) { failure = error; wake(); },
    async count(n) {
      while (ids.length < n && !failure) await new Promise((resolve) => { wake = resolve; });
      if (ids.length < n) {
        const why = 'reason' in failure ? `closed ${failure.code} ${failure.reason}` : failure.message;
        throw new Error(`the subscription ended after ${ids.length} of ${n} messages: ${why}`);
      }
    },
    async failed() {
      while (!failure) await new Promise((resolve) => { wake = resolve; });
      return failure;
    },
  };
}

test('a graphql-ws client renews its token to reconnect and misses no message across the expiry', async () => {
  const adaAccount = await register(server, 'ada');
  const bobAccount = await register(server, 'bob');
  const ada = new Session(adaAccount);
  const bob = new Session(bobAccount);
  const room = (await post('mutation { createRoom(name: "renewals") { id } }', {}, await ada.fresh())).data.createRoom.id;
  await post('mutation($r: ID!) { joinRoom(roomId: $r) { id } }', { r: room }, await bob.fresh());

  const sent = [];
  const send = async (body) => {
    const answer = await post(SEND, { r: room, b: body }, await ada.fresh());
    assert.equal(answer.errors, undefined, JSON.stringify(answer.errors));
    sent.push(answer.data.sendMessage.id);
  };

  // The test decides when a dropped client may connect again (graphql-ws waits in retryWait).
  let allowReconnect;
  const reconnectAllowed = new Promise((resolve) => { allowReconnect = resolve; });
  const closes = [];
  let connections = 0;
  const client = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    // Asked at every (re)connection: a token good for a while yet, renewed if need be.
    connectionParams: async () => ({ authorization: `Bearer ${await bob.fresh()}` }),
    retryAttempts: 3,
    retryWait: () => reconnectAllowed,
    on: {
      connected: () => { connections += 1; },
      closed: (event) => {
        closes.push(event.code);
        // Refused: the token may have expired under the socket's feet, or the session ended.
        if (event.code === 4403) bob.refused = true;
      },
    },
  });

  // graphql-ws sends the same payload again when it resubscribes after a reconnect, serialised
  // afresh: the getter makes `after` the last message seen by then, so the server replays what
  // was missed and nothing twice.
  let lastSeen = null;
  const variables = { r: room, get after() { return lastSeen; } };
  const got = inbox();
  const unsubscribe = client.subscribe({ query: ROOM_EVENTS, variables }, {
    next: ({ data, errors }) => {
      if (errors) return got.fail(new Error(JSON.stringify(errors)));
      if (data.roomEvents.__typename !== 'MessageAdded') return undefined;
      lastSeen = data.roomEvents.message.id;
      return got.push(lastSeen);
    },
    error: (error) => got.fail(error),
    complete: () => got.fail(new Error('the subscription completed')),
  });
  try {
    await barrier(client);
    await send('before the expiry 1');
    await send('before the expiry 2');
    await got.count(2);
    assert.equal(bob.renewals, 0, 'the first token was fresh enough');

    // Bob's access token expires: HTTP refuses it, but the socket lives as long as the session.
    const expired = bob.token;
    await sleep(bob.expiresAt - Date.now() + 1_100);
    const refused = await post('{ me { id } }', {}, expired);
    assert.equal(codeOf(refused), 'UNAUTHENTICATED');
    assert.match(refused.errors[0].message, /expired/);
    await send('after the expiry, same socket');
    await got.count(3);
    assert.equal(connections, 1);

    // The socket drops (the client cuts it, as after a network change); messages are sent while
    // the client is away.
    client.terminate();
    await send('while away 1');
    await send('while away 2');
    allowReconnect();
    // Reconnected with a renewed token and resumed after the last message seen.
    await got.count(5);
    assert.equal(connections, 2);
    assert.equal(bob.renewals, 1, 'the reconnect renewed the expired token');
    assert.notEqual(bob.refreshToken, bobAccount.refreshToken, 'the refresh token was rotated');
    await send('live again');
    await got.count(6);
    await barrier(client);
    assert.deepEqual(got.ids, sent, 'every message once, in order');
    assert.deepEqual(closes, [4499], 'one drop, by the client');

    // The same reconnect without renewing, with the expired token, is refused: 4403.
    let refusedWith;
    const closedStale = new Promise((resolve) => { refusedWith = resolve; });
    const stale = createClient({
      url: server.wsUrl,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${expired}` },
      lazy: false,
      retryAttempts: 0,
      onNonLazyError: () => {},
      on: { closed: (event) => refusedWith(event.code) },
    });
    try {
      assert.equal(await closedStale, 4403);
    } finally {
      await stale.dispose();
    }

    // The first refresh token, spent by the reconnect, turns up again (a copy someone kept): the
    // session is revoked, the live socket closes with 4403, and renewal is refused, so the
    // client gives up instead of reconnecting.
    const replayed = await post(REFRESH, { t: bobAccount.refreshToken });
    assert.equal(codeOf(replayed), 'UNAUTHENTICATED');
    const failure = await got.failed();
    assert.equal(failure.code, 'UNAUTHENTICATED', String(failure));
    assert.deepEqual(closes.slice(0, 2), [4499, 4403]);
    assert.equal(connections, 2);
    assert.equal(codeOf(await post('{ me { id } }', {}, bob.token)), 'UNAUTHENTICATED');
    assert.deepEqual(got.ids, sent, 'nothing more arrived');
  } finally {
    unsubscribe();
    await client.dispose();
  }
});

test('a spent refresh token is refused and ends its session; a logout ends the socket too', async () => {
  const carol = new Session(await register(server, 'carol'));
  const first = carol.refreshToken;
  await carol.renew();
  // The first is spent: presented again, the session is revoked, the renewed token with it.
  assert.equal(codeOf(await post(REFRESH, { t: first })), 'UNAUTHENTICATED');
  assert.equal(codeOf(await post('{ me { id } }', {}, carol.token)), 'UNAUTHENTICATED');
  assert.equal(codeOf(await post(REFRESH, { t: carol.refreshToken })), 'UNAUTHENTICATED');

  // A fresh sign-in; its socket closes with 4403 when the session logs out over HTTP.
  const dave = new Session(await register(server, 'dave'));
  let closedWith;
  const closed = new Promise((resolve) => { closedWith = resolve; });
  const client = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: async () => ({ authorization: `Bearer ${await dave.fresh()}` }),
    retryAttempts: 0,
    on: { closed: (event) => closedWith(event.code) },
  });
  const room = (await post('mutation { createRoom(name: "short-lived") { id } }', {}, dave.token)).data.createRoom.id;
  const unsubscribe = client.subscribe({ query: ROOM_EVENTS, variables: { r: room } }, {
    next: () => {}, error: () => {}, complete: () => {},
  });
  try {
    await barrier(client);
    assert.equal((await post('mutation { logout }', {}, dave.token)).data.logout, true);
    assert.equal(await closed, 4403);
    assert.equal(codeOf(await post(REFRESH, { t: dave.refreshToken })), 'UNAUTHENTICATED');
  } finally {
    unsubscribe();
    await client.dispose();
  }
});

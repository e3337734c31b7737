#!/usr/bin/env node
// Watches a room live with the graphql-ws client, resuming after a message id when given one.
// Reconnects on its own and resumes from the last message it printed, so a restart of the
// server loses nothing.
//
//   node tests/e2e/watch.mjs ROOM_ID TOKEN [AFTER_MESSAGE_ID]
//
// CONFAB_URL defaults to ws://127.0.0.1:8080/graphql. With CONFAB_REFRESH_TOKEN (the
// `refreshToken` of the same sign-in), a reconnect after the access token expired first renews
// it with `refreshSession`: an open socket outlives its token, a new one needs a fresh token.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [room, token, after] = process.argv.slice(2);
if (!room || !token) {
  console.error('usage: node tests/e2e/watch.mjs ROOM_ID TOKEN [AFTER_MESSAGE_ID]');
  process.exit(2);
}
const url = process.env.CONFAB_URL ?? 'ws://127.0.0.1:8080/graphql';
const query = `subscription($r: ID!, $after: ID) { roomEvents(roomId: $r, after: $after) {
  __typename
  ... on MessageAdded { message { id body createdAt sender { username } } }
  ... on MessageEdited { message { id body sender { username } } }
  ... on MessageDeleted { messageId }
  ... on MemberJoined { user { username } }
  ... on MemberLeft { user { username } }
  ... on Typing { user { username } typing }
} }`;

let lastSeen = after ?? null;
let access = token;
let refreshToken = process.env.CONFAB_REFRESH_TOKEN;

/// Seconds since the epoch at which a JWT expires (its `exp`), or Infinity when unreadable.
function expiry(jwt) {
  try {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).exp;
  } catch {
    return Infinity;
  }
}

/// The access token to connect with: renewed first when it expires within 30 s.
async function freshToken() {
  if (!refreshToken || expiry(access) - Date.now() / 1000 > 30) return access;
  const response = await fetch(url.replace(/^ws/, 'http'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      query: 'mutation($t: String!) { refreshSession(refreshToken: $t) { token refreshToken } }',
      variables: { t: refreshToken },
    }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`cannot renew the session: ${body.errors[0].message}`);
  ({ token: access, refreshToken } = body.data.refreshSession);
  console.error('renewed the access token');
  return access;
}

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: async () => ({ authorization: `Bearer ${await freshToken()}` }),
  // Reconnecting is done below, so that each new subscription resumes from `lastSeen`
  // (the client's own retry would resubscribe with the variables of the first attempt).
  retryAttempts: 0,
  on: {
    connected: () => console.error(`connected to ${url}`),
    closed: (event) => console.error(`disconnected (${event.code} ${event.reason || ''})`),
  },
});

function print(event) {
  switch (event.__typename) {
    case 'MessageAdded':
      lastSeen = event.message.id;
      console.log(`[${event.message.createdAt}] ${event.message.sender.username}: ${event.message.body}  (${event.message.id})`);
      break;
    case 'MessageEdited':
      console.log(`(edited) ${event.message.sender.username}: ${event.message.body}  (${event.message.id})`);
      break;
    case 'MessageDeleted':
      console.log(`(deleted ${event.messageId})`);
      break;
    case 'MemberJoined':
      console.log(`* ${event.user.username} joined`);
      break;
    case 'MemberLeft':
      console.log(`* ${event.user.username} left`);
      break;
    case 'Typing':
      if (event.typing) console.log(`* ${event.user.username} is typing…`);
      break;
    default:
      console.log(JSON.stringify(event));
  }
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
for (;;) {
  const events = client.iterate({ query, variables: { r: room, after: lastSeen } });
  try {
    for await (const result of events) {
      if (result.errors) {
        console.error(JSON.stringify(result.errors));
        process.exit(1);
      }
      print(result.data.roomEvents);
    }
    break;
  } catch (errors) {
    if (Array.isArray(errors)) {
      console.error(JSON.stringify(errors));
      process.exit(1);
    }
    // The connection dropped or could not be made: try again shortly, resuming.
    await pause(1000);
  }
}

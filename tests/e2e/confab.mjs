// Starts a real Confab binary on a free port with an in-memory store, and speaks to it the way a
// client application would.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { chromium } from 'playwright-core';

/// Starts Confab; `addr` and `database` let a test restart it where it was. Rate limits are off
/// unless `args` turns them on (with `--rate-limits on` and the limits it tests).
export async function startConfab({ addr = '127.0.0.1:0', database = 'sqlite::memory:', args = [] } = {}) {
  const binary = process.env.CONFAB_BIN;
  if (!binary) {
    throw new Error('set CONFAB_BIN to the confab binary (.ci/run does)');
  }
  const child = spawn(binary, [
    '--addr', addr,
    '--database-url', database,
    '--jwt-secret', 'e2e-secret-e2e-secret-e2e-secret-e2e',
    ...args,
    // The environment's setting gives way to a flag in `args`.
  ], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'info', CONFAB_RATE_LIMITS: 'off' } });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`confab exited with ${code} before listening`)));
    lines.on('line', (line) => {
      const found = line.match(/listening on (http:\/\/\S+)/);
      if (found) resolve(found[1]);
    });
  });
  return {
    url,
    wsUrl: url.replace(/^http/, 'ws') + '/graphql',
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    },
  };
}

export async function gql(server, query, variables = {}, token) {
  const response = await fetch(`${server.url}/graphql`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

/// Registers `username`: its id, access token, refresh token and the access token's expiry.
export async function register(server, username) {
  const data = await gql(
    server,
    `mutation($u: String!, $p: String!) { register(username: $u, password: $p) {
      token refreshToken expiresAt user { id } } }`,
    { u: username, p: 'end to end password' },
  );
  const { token, refreshToken, expiresAt, user } = data.register;
  return { token, refreshToken, expiresAt: Date.parse(expiresAt), id: user.id, username };
}

export function wsClient(server, token, options = {}) {
  return createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
    ...options,
  });
}

/// Collects a subscription's results into an async queue.
export function subscribe(client, query, variables) {
  const items = [];
  const waiters = [];
  let failure = null;
  let done = false;
  const settle = () => {
    while (waiters.length && (items.length || failure || done)) {
      const { resolve, reject } = waiters.shift();
      if (items.length) resolve(items.shift());
      else if (failure) reject(failure);
      else resolve(null);
    }
  };
  const unsubscribe = client.subscribe({ query, variables }, {
    next: (value) => { items.push(value); settle(); },
    error: (error) => { failure = error; settle(); },
    complete: () => { done = true; settle(); },
  });
  return {
    unsubscribe,
    next: () => new Promise((resolve, reject) => { waiters.push({ resolve, reject }); settle(); }),
  };
}

/// Runs a query over the same socket. Confab reads a socket's messages in order and each only
/// once the subscriptions before it are live, so when this answers they are.
export async function barrier(client) {
  const sub = subscribe(client, '{ __typename }');
  const result = await sub.next();
  if (!result || !result.data) throw new Error(`barrier failed: ${JSON.stringify(result)}`);
}

/// Debian's Chromium, headless, with nothing reaching out to the network on its own.
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

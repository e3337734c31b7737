// Confab's chat page: plain ES module, no build step, no CDN. HTTP for queries and mutations,
// a small graphql-transport-ws client for live room events. After a reconnect it resubscribes
// with `after` = the newest message it has, so nothing sent meanwhile is lost.
//
// Signing in starts a session: a short-lived access token and a refresh token that is good
// once (each renewal hands out the next; a spent one presented again revokes the session). The
// page renews the access token shortly before it expires, and again when the server refuses it;
// when renewal is refused the session was ended elsewhere, and the page says so.

const $ = (id) => document.getElementById(id);

const state = {
  token: null, // the access token
  expires: 0, // when it expires, by this computer's clock (ms)
  sessionId: null, // the session the tokens belong to
  leaving: false, // logging out: the socket's 4403 is expected
  me: null,
  room: null, // { id, name }
  myRooms: new Map(),
  roomsAfter: null,
  oldest: null, // cursor of the oldest message shown
  newest: new Map(), // room id -> newest message id seen
  subscription: null,
  typing: new Map(), // username -> timer
};

const SIGNED_OUT_ELSEWHERE = 'Signed out elsewhere. Log in again to continue.';

// ---------------------------------------------------------------------------------------------
// Errors in words, not in the console

function showError(text) {
  $('error').textContent = text || '';
  $('error').hidden = !text;
}

function explain(error) {
  if (error instanceof TypeError) return 'Cannot reach the Confab server. Is it running?';
  return error.message || String(error);
}

async function attempt(action) {
  try {
    showError('');
    return await action();
  } catch (error) {
    // Signed out: the sign-in form already says why.
    if (error.code === SIGNED_OUT) return undefined;
    showError(explain(error));
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Where the session is kept
//
// With Web Locks and IndexedDB (current browsers, on https or localhost) the tabs of a browser
// share one session and take turns renewing it: a tab that waited for the lock finds the tokens
// another tab just renewed and takes them, instead of presenting the refresh token that tab
// spent (which would revoke the session). The tokens are kept in IndexedDB, not localStorage:
// a tab may read localStorage stale for a moment after another tab wrote it, even under the
// lock, and IndexedDB's transactions are ordered across tabs. Without either, nothing can make
// two tabs take turns, so each tab keeps a session of its own in sessionStorage.
//
// The access token is also in localStorage, under the name GraphiQL (at /graphql) signs in
// with; it is written after the session is kept, so other tabs hear of every change.

const TOKEN_KEY = 'confab.token';

/// The session a refresh token (`<session id>.<secret>`) belongs to.
const sessionOf = (refreshToken) => (refreshToken ? refreshToken.split('.')[0] : null);

/// One tab's session, in sessionStorage.
function tabVault() {
  const KEY = 'confab.session';
  const read = () => JSON.parse(sessionStorage.getItem(KEY) || 'null');
  return {
    read: async () => read(),
    write: async (session) => sessionStorage.setItem(KEY, JSON.stringify(session)),
    forget: async (sessionId) => {
      const session = read();
      if (session && sessionOf(session.refreshToken) === sessionId) sessionStorage.removeItem(KEY);
    },
  };
}

/// The browser's session, in IndexedDB (`confab`, store `session`, key `current`).
async function sharedVault() {
  const db = await new Promise((resolve, reject) => {
    const opening = indexedDB.open('confab', 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore('session');
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
  });
  /// Runs `work` in a transaction; once it has committed, the result of the request it returned.
  const run = (mode, work) => new Promise((resolve, reject) => {
    const transaction = db.transaction('session', mode);
    const request = work(transaction.objectStore('session'));
    transaction.oncomplete = () => resolve(request && request.result);
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error);
  });
  return {
    read: async () => (await run('readonly', (kept) => kept.get('current'))) || null,
    write: (session) => run('readwrite', (kept) => kept.put(session, 'current')),
    forget: (sessionId) => run('readwrite', (kept) => {
      const current = kept.get('current');
      current.onsuccess = () => {
        if (current.result && sessionOf(current.result.refreshToken) === sessionId) kept.delete('current');
      };
    }),
  };
}

async function openVault() {
  if (navigator.locks && window.indexedDB) {
    try {
      return { vault: await sharedVault(), shared: true };
    } catch {
      // IndexedDB refused (a private window in some browsers): one session per tab.
    }
  }
  return { vault: tabVault(), shared: false };
}

// Opened while the page starts; the form's handlers are in place meanwhile.
const opened = openVault();
let shared = false;
opened.then((chosen) => { shared = chosen.shared; });
const vault = {
  read: async () => (await opened).vault.read(),
  write: async (session) => (await opened).vault.write(session),
  forget: async (sessionId) => (await opened).vault.forget(sessionId),
};

/// Keeps new tokens (then tells other tabs) and uses them.
async function keep(session) {
  await vault.write(session);
  localStorage.setItem(TOKEN_KEY, session.token);
  adopt(session);
}

/// Uses tokens kept (by this tab or another) from now on.
function adopt({ token, expires, refreshToken }) {
  Object.assign(state, { token, expires, sessionId: sessionOf(refreshToken) });
  scheduleRenewal();
}

/// Stops using this tab's session and, unless `keepSession`, forgets it (one another tab
/// started since stays).
function drop({ keepSession = false } = {}) {
  const { sessionId, token } = state;
  clearTimeout(renewalTimer);
  Object.assign(state, { token: null, expires: 0, sessionId: null });
  if (keepSession || !sessionId) return;
  vault.forget(sessionId).catch(() => {}).finally(() => {
    if (localStorage.getItem(TOKEN_KEY) === token) localStorage.removeItem(TOKEN_KEY);
  });
}

/// Tokens as the server issued them, with their expiry read against the server's clock (the
/// answer's `Date`), so a computer whose clock is off still renews in time.
function fromPayload(payload, serverDate) {
  const now = Date.now();
  const serverNow = Date.parse(serverDate) || now;
  // `Date` counts whole seconds: up to one of the lifetime may have passed already.
  const lifetime = Date.parse(payload.expiresAt) - serverNow - 1000;
  return { token: payload.token, refreshToken: payload.refreshToken, expires: now + lifetime };
}

// ---------------------------------------------------------------------------------------------
// Renewing the access token

/// The code of the error thrown once the page has signed out because renewal was refused.
const SIGNED_OUT = 'SIGNED_OUT';
/// A token with less than this left is renewed before it is used.
const NEARLY_EXPIRED = 5_000;
const AUTH_FIELDS = 'token refreshToken expiresAt';

let renewalTimer = null;
let renewing = null;

/// Renews shortly before the token expires: a third of its remaining life early, at most a
/// minute (a background tab's timers may fire a minute late; then the server's refusal of the
/// expired token renews it).
function scheduleRenewal() {
  clearTimeout(renewalTimer);
  if (!state.token) return;
  const left = state.expires - Date.now();
  const early = Math.min(60_000, Math.max(NEARLY_EXPIRED, left / 3));
  // Never sooner than a second: a lifetime misread as nothing must not renew in a loop.
  const delay = Math.max(1_000, left - early);
  renewalTimer = setTimeout(() => {
    renew(state.token).catch((error) => {
      if (error.code === SIGNED_OUT || !state.token) return;
      // The server is out of reach: try again soon (the token may still be good).
      renewalTimer = setTimeout(scheduleRenewal, 10_000);
    });
  }, delay);
}

function withRenewalLock(run) {
  return shared ? navigator.locks.request('confab.renewal', run) : run();
}

/// Replaces `stale`, the access token this tab holds, with a renewed one: one renewal at a time
/// in this tab and, with Web Locks, in this browser. When another tab renewed meanwhile, its
/// tokens are taken instead. A refused renewal signs the page out (and throws SIGNED_OUT).
function renew(stale) {
  renewing ??= withRenewalLock(async () => {
    const now = await vault.read();
    if (!now || sessionOf(now.refreshToken) !== state.sessionId) {
      // Another tab signed out (or into another session).
      throw signedOutElsewhere();
    }
    if (now.token !== stale && now.expires - Date.now() > NEARLY_EXPIRED) {
      adopt(now);
      return;
    }
    let answer;
    try {
      answer = await request(`mutation($t: String!) { refreshSession(refreshToken: $t) { ${AUTH_FIELDS} } }`, { t: now.refreshToken });
    } catch (error) {
      if (error.code === 'UNAUTHENTICATED') throw signedOutElsewhere();
      throw error;
    }
    // The page may have signed out while it waited.
    if (state.sessionId !== sessionOf(now.refreshToken)) throw signedOutError();
    await keep(fromPayload(answer.data.refreshSession, answer.date));
  }).finally(() => { renewing = null; });
  return renewing;
}

/// An access token good for a while yet: renewed first when it nearly expired, or when it is
/// `refused`, the token the server just refused.
async function freshToken(refused) {
  if (!state.token) throw signedOutError();
  if (state.token === refused || state.expires - Date.now() < NEARLY_EXPIRED) await renew(state.token);
  return state.token;
}

function signedOutError() {
  const error = new Error('signed out');
  error.code = SIGNED_OUT;
  return error;
}

/// The session ended elsewhere (logged out, revoked, or its refresh token used by someone
/// else): back to the sign-in form, saying so (unless this page was logging out anyway).
function signedOutElsewhere() {
  if (state.leaving) signOut('');
  else signOut(state.me ? SIGNED_OUT_ELSEWHERE : 'Your session has ended; log in again.');
  return signedOutError();
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP

/// One request, with `token` if any: its data and the answer's `Date`. GraphQL errors are
/// thrown with their code.
async function request(query, variables = {}, token = null) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`The server answered ${response.status} without a GraphQL body.`);
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const error = new Error(first.message);
    error.code = first.extensions && first.extensions.code;
    throw error;
  }
  return { data: body.data, date: response.headers.get('date') };
}

/// A request as the signed-in user (or anonymous when signed out). An access token the server
/// refuses is renewed once and the request sent again.
async function gql(query, variables = {}) {
  if (!state.token) return (await request(query, variables)).data;
  const token = await freshToken();
  try {
    return (await request(query, variables, token)).data;
  } catch (error) {
    if (error.code !== 'UNAUTHENTICATED') throw error;
    return (await request(query, variables, await freshToken(token))).data;
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal graphql-transport-ws client

class Live {
  constructor() {
    this.subs = new Map();
    this.nextId = 1;
    this.retry = 0;
    this.socket = null;
    this.opening = false;
    this.acked = false;
    this.stopped = true;
    this.generation = 0; // a start or stop since an attempt began makes it moot
    this.refused = null; // the access token the server closed the last socket for (4403)
    this.onReconnect = () => {};
  }

  start() {
    this.generation += 1;
    this.stopped = false;
    this.opening = false;
    this.refused = null;
    this.open(false);
  }

  stop() {
    this.generation += 1;
    this.stopped = true;
    this.opening = false;
    this.subs.clear();
    if (this.socket) this.socket.close(1000, 'signed out');
    this.socket = null;
  }

  /// Connects with a token good for a while yet (a socket then lives as long as the session).
  /// After a 4403 the token is renewed first; if renewal is refused the page signs out.
  async open(reconnecting) {
    if (this.stopped || this.opening) return;
    const { generation } = this;
    this.opening = true;
    setStatus(reconnecting ? 'reconnecting' : 'connecting');
    let token;
    try {
      token = await freshToken(this.refused);
    } catch (error) {
      if (generation !== this.generation) return;
      this.opening = false;
      // Signed out: nothing to connect for. Else the server is out of reach: later.
      if (error.code !== SIGNED_OUT) this.again();
      return;
    }
    if (generation !== this.generation) return;
    this.opening = false;
    this.refused = null;
    const socket = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
    this.socket = socket;
    this.acked = false;
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const sub = message.id && this.subs.get(message.id);
      switch (message.type) {
        case 'connection_ack':
          this.acked = true;
          this.retry = 0;
          setStatus('live');
          for (const [id, entry] of this.subs) this.send(id, entry);
          if (reconnecting) this.onReconnect();
          break;
        case 'ping':
          socket.send(JSON.stringify({ type: 'pong' }));
          break;
        case 'next':
          if (sub) sub.next(message.payload);
          break;
        case 'error':
          this.subs.delete(message.id);
          if (sub) sub.error(message.payload);
          break;
        case 'complete':
          this.subs.delete(message.id);
          break;
        default:
          break;
      }
    };
    socket.onclose = (event) => {
      this.acked = false;
      if (this.stopped || socket !== this.socket || state.leaving) return;
      this.socket = null;
      if (event.code === 1000 && this.subs.size === 0) {
        // Closed for running nothing: connect again when there is something to watch.
        setStatus('idle');
        return;
      }
      // Refused: the session ended (renewal will say so) or the token expired on the way.
      if (event.code === 4403) this.refused = token;
      this.again();
    };
  }

  again() {
    setStatus('reconnecting');
    const { generation } = this;
    const delay = Math.min(10_000, 500 * 2 ** this.retry++);
    setTimeout(() => { if (generation === this.generation) this.open(true); }, delay);
  }

  /// `variables` may be a function: it is asked again at every (re)subscription.
  subscribe(query, variables, handlers) {
    const id = String(this.nextId++);
    const entry = { query, variables, ...handlers };
    this.subs.set(id, entry);
    if (this.acked) this.send(id, entry);
    else if (!this.socket) this.open(false);
    return id;
  }

  send(id, entry) {
    const variables = typeof entry.variables === 'function' ? entry.variables() : entry.variables;
    this.socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query: entry.query, variables } }));
  }

  unsubscribe(id) {
    if (this.subs.delete(id) && this.acked) this.socket.send(JSON.stringify({ id, type: 'complete' }));
  }
}

const live = new Live();
live.onReconnect = () => {
  // A message may have been sent in an empty room while offline: the resumed subscription
  // has no `after` then, so read the newest page again too (it de-duplicates).
  if (state.room) attempt(() => loadNewest(state.room.id));
};

function setStatus(status) {
  const el = $('status');
  el.textContent = status;
  el.className = `status ${status}`;
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

async function signedIn() {
  const { me } = await gql('{ me { id username } }');
  state.me = me;
  state.leaving = false;
  $('who').textContent = me.username;
  for (const id of ['who', 'sessions-open', 'logout']) $(id).hidden = false;
  $('signin').hidden = true;
  $('chat').hidden = false;
  live.start();
  await loadRooms();
}

/// Back to the sign-in form. With `keepSession`, the session stays kept for the next load (the
/// server could not be reached to check it).
function signOut(reason, { keepSession = false } = {}) {
  live.stop();
  setStatus('offline');
  drop({ keepSession });
  Object.assign(state, { me: null, room: null, subscription: null, leaving: false });
  if ($('sessions').open) $('sessions').close();
  for (const id of ['who', 'sessions-open', 'logout']) $(id).hidden = true;
  $('chat').hidden = true;
  $('signin').hidden = false;
  showError(reason || '');
}

$('auth-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const action = event.submitter && event.submitter.value === 'register' ? 'register' : 'login';
  attempt(async () => {
    const { data, date } = await request(
      `mutation($u: String!, $p: String!) { ${action}(username: $u, password: $p) { ${AUTH_FIELDS} } }`,
      { u: form.get('username'), p: form.get('password') },
    );
    await keep(fromPayload(data[action], date));
    await signedIn();
    event.target.elements.password.value = '';
  });
});

/// Ends the session on the server (everywhere, or just this one), then here.
async function logOut(everywhere) {
  state.leaving = true;
  try {
    await gql(everywhere ? 'mutation { logoutEverywhere }' : 'mutation { logout }');
  } catch (error) {
    state.leaving = false;
    throw error;
  }
  signOut('');
}

$('logout').addEventListener('click', () => attempt(() => logOut(false)));

// Another tab renewed, signed out or signed in: this one follows (shared sessions only).
window.addEventListener('storage', (event) => {
  if (shared && event.storageArea === localStorage && (event.key === TOKEN_KEY || event.key === null)) follow();
});

async function follow() {
  const now = await vault.read();
  if (!state.me) {
    if (now && !state.token) start();
  } else if (!now) {
    signOut(SIGNED_OUT_ELSEWHERE);
  } else if (sessionOf(now.refreshToken) !== state.sessionId) {
    location.reload();
  } else {
    adopt(now);
  }
}

// ---------------------------------------------------------------------------------------------
// Sessions: where this account is signed in

const BROWSERS = [[/Edg\//, 'Edge'], [/OPR\//, 'Opera'], [/Firefox\//, 'Firefox'], [/HeadlessChrome\//, 'Headless Chrome'],
  [/Chrome\//, 'Chrome'], [/Safari\//, 'Safari'], [/^curl\//, 'curl'], [/^node\b/, 'Node.js']];
const SYSTEMS = [[/Windows/, 'Windows'], [/iPhone|iPad/, 'iOS'], [/Mac OS X/, 'macOS'], [/Android/, 'Android'],
  [/CrOS/, 'ChromeOS'], [/Linux/, 'Linux']];

/// "Firefox on Linux" for a User-Agent.
function describeAgent(agent) {
  if (!agent) return 'Unknown client';
  const find = (list) => (list.find(([pattern]) => pattern.test(agent)) || [])[1];
  const browser = find(BROWSERS) || agent.split(/[ /]/)[0];
  const system = find(SYSTEMS);
  return system ? `${browser} on ${system}` : browser;
}

function when(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

async function loadSessions() {
  const { sessions } = await gql('{ sessions { id createdAt lastUsedAt userAgent current } }');
  $('session-list').replaceChildren(...sessions.map((session) => {
    const li = document.createElement('li');
    li.dataset.id = session.id;
    li.classList.toggle('current', session.current);
    const agent = document.createElement('div');
    agent.className = 'agent';
    agent.textContent = describeAgent(session.userAgent);
    agent.title = session.userAgent || '';
    const meta = document.createElement('div');
    meta.className = 'muted';
    meta.textContent = `Last used ${when(session.lastUsedAt)} · signed in ${when(session.createdAt)}`;
    const about = document.createElement('div');
    about.className = 'about';
    about.append(agent, meta);
    li.append(about);
    if (session.current) {
      const mark = document.createElement('span');
      mark.className = 'badge';
      mark.textContent = shared ? 'This browser' : 'This tab';
      li.append(mark);
    } else {
      const revoke = document.createElement('button');
      revoke.type = 'button';
      revoke.className = 'secondary';
      revoke.textContent = 'Revoke';
      revoke.addEventListener('click', () => attempt(async () => {
        await gql('mutation($id: ID!) { revokeSession(id: $id) }', { id: session.id });
        await loadSessions();
      }));
      li.append(revoke);
    }
    return li;
  }));
}

$('sessions-open').addEventListener('click', () => attempt(async () => {
  $('session-list').replaceChildren();
  $('sessions').showModal();
  await loadSessions();
}));

$('sessions-close').addEventListener('click', () => $('sessions').close());

$('logout-everywhere').addEventListener('click', () => {
  if (!confirm('Log out of every session, this one included?')) return;
  attempt(() => logOut(true));
});
// ---------------------------------------------------------------------------------------------
// Rooms

function roomItem(room, joined) {
  const li = document.createElement('li');
  li.dataset.id = room.id;
  if (state.room && state.room.id === room.id) li.classList.add('current');
  const name = document.createElement('span');
  name.textContent = `${room.name}`;
  name.title = `${room.name} · ${room.memberCount} member${room.memberCount === 1 ? '' : 's'}`;
  li.append(name);
  if (joined) {
    name.addEventListener('click', () => attempt(() => openRoom(room)));
  } else {
    const join = document.createElement('button');
    join.type = 'button';
    join.className = 'link';
    join.textContent = 'Join';
    join.addEventListener('click', () => attempt(async () => {
      await gql('mutation($r: ID!) { joinRoom(roomId: $r) { id } }', { r: room.id });
      await loadRooms();
      await openRoom(room);
    }));
    li.append(join);
  }
  return li;
}

const ROOM_FIELDS = 'id name memberCount';

async function loadRooms() {
  // Every room of mine, a page of 100 at a time (one may be in at most 1,000).
  const mine = [];
  let after = null;
  for (;;) {
    const data = await gql(
      `query($after: String) { myRooms(first: 100, after: $after) { edges { node { ${ROOM_FIELDS} } } pageInfo { hasNextPage endCursor } } }`,
      { after },
    );
    mine.push(...data.myRooms.edges.map((edge) => edge.node));
    if (!data.myRooms.pageInfo.hasNextPage) break;
    after = data.myRooms.pageInfo.endCursor;
  }
  const data = await gql(`{ rooms(first: 50) { edges { node { ${ROOM_FIELDS} } } pageInfo { hasNextPage endCursor } } }`);
  state.myRooms = new Map(mine.map((r) => [r.id, r]));
  $('my-rooms').replaceChildren(...mine.map((r) => roomItem(r, true)));
  $('all-rooms').replaceChildren();
  appendDirectory(data.rooms);
}

function appendDirectory(page) {
  for (const { node } of page.edges) {
    if (!state.myRooms.has(node.id)) $('all-rooms').append(roomItem(node, false));
  }
  state.roomsAfter = page.pageInfo.endCursor;
  $('more-rooms').hidden = !page.pageInfo.hasNextPage;
}

$('more-rooms').addEventListener('click', () => attempt(async () => {
  const data = await gql(
    `query($after: String) { rooms(first: 50, after: $after) { edges { node { ${ROOM_FIELDS} } } pageInfo { hasNextPage endCursor } } }`,
    { after: state.roomsAfter },
  );
  appendDirectory(data.rooms);
}));

$('new-room').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = event.target.elements.name;
  attempt(async () => {
    const { createRoom } = await gql(`mutation($n: String!) { createRoom(name: $n) { ${ROOM_FIELDS} } }`, { n: input.value });
    input.value = '';
    await loadRooms();
    await openRoom(createRoom);
  });
});

$('back').addEventListener('click', () => $('chat').classList.remove('in-room'));

// ---------------------------------------------------------------------------------------------
// One room: history, live events, sending

const MESSAGE_FIELDS = 'id body createdAt editedAt sender { id username }';
const ROOM_EVENTS = `subscription($r: ID!, $after: ID) { roomEvents(roomId: $r, after: $after) {
  __typename
  ... on MessageAdded { message { ${MESSAGE_FIELDS} } }
  ... on MessageEdited { message { ${MESSAGE_FIELDS} } }
  ... on MessageDeleted { messageId }
  ... on MemberJoined { user { username } }
  ... on MemberLeft { user { username } }
  ... on Typing { user { username } typing }
} }`;

async function openRoom(room) {
  if (state.subscription) live.unsubscribe(state.subscription);
  state.room = room;
  state.oldest = null;
  $('chat').classList.add('in-room');
  $('room-name').textContent = room.name;
  $('members').textContent = '';
  $('messages').replaceChildren();
  $('typing').textContent = '';
  $('composer').hidden = false;
  for (const li of document.querySelectorAll('.rooms li')) li.classList.toggle('current', li.dataset.id === room.id);
  // Live first, then the history: a message sent in between shows once, in its place.
  state.subscription = live.subscribe(ROOM_EVENTS, () => ({ r: room.id, after: state.newest.get(room.id) || null }), {
    next: (payload) => onRoomEvent(room.id, payload),
    error: (errors) => showError(errors.map((e) => e.message).join('; ')),
  });
  await loadNewest(room.id);
  await showMemberCount(room.id);
}

async function showMemberCount(roomId) {
  const { room } = await gql('query($id: ID!) { room(id: $id) { memberCount } }', { id: roomId });
  if (room && state.room && state.room.id === roomId) {
    $('members').textContent = `${room.memberCount} member${room.memberCount === 1 ? '' : 's'}`;
  }
}

async function loadNewest(roomId) {
  const { messages } = await gql(
    `query($r: ID!) { messages(roomId: $r, last: 50) { edges { node { ${MESSAGE_FIELDS} } } pageInfo { hasPreviousPage startCursor } } }`,
    { r: roomId },
  );
  if (!state.room || state.room.id !== roomId) return;
  const atBottom = isScrolledDown();
  for (const { node } of messages.edges) upsertMessage(node);
  if (state.oldest === null) {
    state.oldest = messages.pageInfo.startCursor;
    $('older').hidden = !messages.pageInfo.hasPreviousPage;
  }
  if (atBottom || messages.edges.length) scrollDown();
}

$('older').addEventListener('click', () => attempt(async () => {
  const roomId = state.room.id;
  const { messages } = await gql(
    `query($r: ID!, $before: String) { messages(roomId: $r, last: 50, before: $before) { edges { node { ${MESSAGE_FIELDS} } } pageInfo { hasPreviousPage startCursor } } }`,
    { r: roomId, before: state.oldest },
  );
  if (state.room.id !== roomId) return;
  const list = $('messages');
  const height = list.scrollHeight;
  for (const { node } of messages.edges) upsertMessage(node);
  list.scrollTop += list.scrollHeight - height;
  state.oldest = messages.pageInfo.startCursor || state.oldest;
  $('older').hidden = !messages.pageInfo.hasPreviousPage;
}));

function onRoomEvent(roomId, payload) {
  if (payload.errors) {
    showError(payload.errors.map((e) => e.message).join('; '));
    return;
  }
  if (!state.room || state.room.id !== roomId) return;
  const event = payload.data.roomEvents;
  const atBottom = isScrolledDown();
  switch (event.__typename) {
    case 'MessageAdded':
    case 'MessageEdited':
      upsertMessage(event.message);
      clearTyping(event.message.sender.username);
      break;
    case 'MessageDeleted': {
      const li = messageElement(event.messageId);
      if (li) li.remove();
      break;
    }
    case 'MemberJoined':
      notice(`${event.user.username} joined`);
      attempt(() => showMemberCount(roomId));
      break;
    case 'MemberLeft':
      notice(`${event.user.username} left`);
      attempt(() => showMemberCount(roomId));
      break;
    case 'Typing':
      if (event.user.username !== state.me.username) showTyping(event.user.username, event.typing);
      return;
    default:
      return;
  }
  if (atBottom) scrollDown();
}

function messageElement(id) {
  return document.querySelector(`#messages li[data-id="${id}"]`);
}

/// Shows a message in id order (ids are chronological), or updates it where it stands.
function upsertMessage(message) {
  const newest = state.newest.get(state.room.id);
  if (!newest || message.id > newest) state.newest.set(state.room.id, message.id);
  let li = messageElement(message.id);
  if (!li) {
    li = document.createElement('li');
    li.dataset.id = message.id;
    const list = $('messages');
    const after = [...list.querySelectorAll('li[data-id]')].find((other) => other.dataset.id > message.id);
    list.insertBefore(li, after || null);
  }
  const time = new Date(message.createdAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = message.sender.username;
  meta.append(author, `${time}${message.editedAt ? ' · edited' : ''}`);
  if (state.me && message.sender.id === state.me.id) {
    meta.append(action('Edit', () => editMessage(message)), action('Delete', () => deleteMessage(message.id)));
  }
  const body = document.createElement('div');
  body.className = 'body';
  body.textContent = message.body;
  li.replaceChildren(meta, body);
}

function action(label, run) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'link';
  button.textContent = label;
  button.addEventListener('click', () => attempt(run));
  return button;
}

async function editMessage(message) {
  const body = prompt('Edit your message', message.body);
  if (body === null || body === message.body) return;
  const { editMessage: edited } = await gql(
    `mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { ${MESSAGE_FIELDS} } }`,
    { m: message.id, b: body },
  );
  upsertMessage(edited);
}

async function deleteMessage(id) {
  if (!confirm('Delete this message?')) return;
  await gql('mutation($m: ID!) { deleteMessage(messageId: $m) }', { m: id });
  const li = messageElement(id);
  if (li) li.remove();
}

function notice(text) {
  const li = document.createElement('li');
  li.className = 'notice';
  li.textContent = text;
  $('messages').append(li);
}

function showTyping(username, typing) {
  clearTimeout(state.typing.get(username));
  if (typing) {
    state.typing.set(username, setTimeout(() => clearTyping(username), 6000));
  } else {
    state.typing.delete(username);
  }
  renderTyping();
}

function clearTyping(username) {
  clearTimeout(state.typing.get(username));
  if (state.typing.delete(username)) renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()];
  $('typing').textContent = names.length ? `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…` : '';
}

function isScrolledDown() {
  const list = $('messages');
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function scrollDown() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

// The composer: Enter sends, Shift+Enter starts a new line. Each message carries a clientId,
// so a retry after a failure can never send it twice.
const composer = $('composer');
let pendingClientId = null;
let typingSentAt = 0;
let typingTimer = null;

composer.elements.body.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    composer.requestSubmit();
  }
});

composer.elements.body.addEventListener('input', () => {
  if (!state.room) return;
  const roomId = state.room.id;
  if (Date.now() - typingSentAt > 3000) {
    typingSentAt = Date.now();
    gql('mutation($r: ID!) { setTyping(roomId: $r, typing: true) }', { r: roomId }).catch(() => {});
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => {
    typingSentAt = 0;
    gql('mutation($r: ID!) { setTyping(roomId: $r, typing: false) }', { r: roomId }).catch(() => {});
  }, 4000);
});

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const input = composer.elements.body;
  const body = input.value;
  if (!body.trim() || !state.room) return;
  pendingClientId = pendingClientId || crypto.randomUUID();
  const button = composer.querySelector('button');
  button.disabled = true;
  attempt(async () => {
    const { sendMessage } = await gql(
      `mutation($r: ID!, $b: String!, $c: String) { sendMessage(roomId: $r, body: $b, clientId: $c) { ${MESSAGE_FIELDS} } }`,
      { r: state.room.id, b: body, c: pendingClientId },
    );
    pendingClientId = null;
    input.value = '';
    clearTimeout(typingTimer);
    typingSentAt = 0;
    upsertMessage(sendMessage);
    scrollDown();
  }).finally(() => { button.disabled = false; input.focus(); });
});

// ---------------------------------------------------------------------------------------------
// Start

/// Signs in with the session kept, if any: a session that ended is forgotten, saying so; when
/// the server cannot be reached it stays kept for the next load.
async function start() {
  const session = await vault.read();
  if (!session) {
    signOut('');
    return;
  }
  adopt(session);
  attempt(signedIn).then(() => {
    if (!state.me && state.token) signOut($('error').textContent, { keepSession: true });
  });
}

start();

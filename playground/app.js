// Confab's chat page: plain ES module, no build step, no CDN. HTTP for queries and mutations,
// a small graphql-transport-ws client for live room events. After a reconnect it resubscribes
// with `after` = the newest message it has, so nothing sent meanwhile is lost.
//
// Signing in starts a session: a short-lived access token and a refresh token that is good
// once (each renewal hands out the next; a spent one presented again revokes the session). The
// page renews the access token shortly before it expires, and again when the server refuses it;
// when renewal is refused the session was ended elsewhere, and the page says so.
//
// The room list shows what is unread in each of my rooms and whether someone mentioned me
// there. It is read once, at sign-in, and then kept live by one `myEvents` subscription for all
// my rooms (see "The inbox" below) beside the open room's `roomEvents`: new messages bring their
// room's counts, a marker moved on another device brings the new ones, invitations come in and
// rooms I leave or am removed from go, on any device. The stream resumes after a reconnect from
// the last event's cursor, kept in this tab's sessionStorage; without one, the list is read
// again. In the open room the newest message that has come into view is marked read (at most
// about once a second), which clears that room's counts. Members show whether they are online.
//
// Messages are drawn with DOM nodes only (never as HTML): links (http and https alone) open in
// a new tab without a referrer; a deleted message leaves a placeholder; times say their date
// when not from today, with a divider where the day changes. Every button that asks the server
// something is disabled until it answers. The room open and each room's draft are kept in
// this tab's sessionStorage, so a reload or a session that ends loses neither.

const $ = (id) => document.getElementById(id);

const state = {
  token: null, // the access token
  expires: 0, // when it expires, by this computer's clock (ms)
  sessionId: null, // the session the tokens belong to
  leaving: false, // logging out: the socket's 4403 is expected
  me: null,
  room: null, // the room shown: { id name memberCount visibility topic isDirect myRole }
  members: null, // its members while shown, once listed: user id -> { user, role }
  messages: new Map(), // the messages shown, by id (to redraw their actions)
  myRooms: new Map(),
  directory: new Map(), // the public rooms listed, by id
  roomsAfter: null,
  people: new Map(), // every user the page has come across: lower-case username -> { id, username }
  scanned: new Set(), // rooms whose members were read to find someone to invite
  gone: new Set(), // rooms `myEvents` said I am out of since the room list was last read
  oldest: null, // cursor of the oldest message shown
  newest: new Map(), // room id -> newest message id seen
  read: new Map(), // room id -> my read marker there, as far as this page knows (or has asked for)
  subscription: null,
  leavingRoom: null, // the room this page is leaving, while it asks
  inbox: null, // the `myEvents` subscription
  presence: new Map(), // user id -> ONLINE, AWAY or OFFLINE, as last heard
  typing: new Map(), // username -> timer
};

const SIGNED_OUT_ELSEWHERE = 'Signed out elsewhere. Log in again to continue.';
/// The room open in this tab, kept across a reload (and a session that ends): { user, room }.
const OPEN_ROOM_KEY = 'confab.room';

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

/// Runs something the person asked for: the last error shown gives way to its outcome.
async function attempt(action) {
  showError('');
  return background(action);
}

/// Runs something the page does on its own (an event came, the connection came back): an
/// error it meets is shown, but an error already shown stays, as it has not been dealt with.
async function background(action) {
  try {
    return await action();
  } catch (error) {
    // Signed out: the sign-in form already says why.
    if (error.code === SIGNED_OUT) return undefined;
    showError(explain(error));
    return undefined;
  }
}

/// Runs what `buttons` (one or several) ask of the server: they are disabled, and say they
/// are busy, until it is done, so a second click (or Enter) cannot ask twice.
function busy(buttons, action) {
  const all = [buttons].flat();
  if (all.some((button) => button.getAttribute('aria-busy') === 'true')) return Promise.resolve(undefined);
  for (const button of all) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  }
  return attempt(action).finally(() => {
    for (const button of all) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });
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
          if (sub && sub.complete) sub.complete();
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
  // The inbox resumes from its cursor; with none yet, what it would have told is read again.
  // Presence is never replayed: the direct rooms' people are read again (the open room's
  // members are, below).
  if (state.me && !cursorOf(state.me.id)) background(refreshSidebar);
  else if (state.me) background(refreshPeers);
  // A message may have been sent in an empty room while offline: the resumed subscription
  // has no `after` then, so read the newest page again too (it de-duplicates). Members and
  // roles may have changed meanwhile too.
  if (state.room) {
    background(async () => {
      await refreshRoom();
      if (state.room) await loadNewest(state.room.id);
    });
  }
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
  for (const id of ['who', 'sessions-open', 'logout', 'status']) $(id).hidden = false;
  $('signin').hidden = true;
  $('chat').hidden = false;
  live.start();
  watchInbox();
  await loadRooms();
  await reopenRoom();
}

/// Back to the sign-in form. With `keepSession`, the session stays kept for the next load (the
/// server could not be reached to check it).
///
/// The live connection's state is shown only while signed in: signed out, there is no
/// connection to speak of (and "offline" would read as if the server were down).
function signOut(reason, { keepSession = false } = {}) {
  live.stop();
  $('status').hidden = true;
  drop({ keepSession });
  Object.assign(state, { me: null, leaving: false });
  // The room open stays kept (as do the drafts), to be opened again after signing in.
  closeRoom('', { forget: false });
  state.people.clear();
  state.scanned.clear();
  state.read.clear();
  state.inbox = null;
  state.presence.clear();
  $('invitations').replaceChildren();
  $('invitations-box').hidden = true;
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
  busy([...event.target.querySelectorAll('button')], async () => {
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
/// Logging out on purpose forgets the room open and my drafts, which a session that merely
/// ended keeps.
async function logOut(everywhere) {
  state.leaving = true;
  try {
    await gql(everywhere ? 'mutation { logoutEverywhere }' : 'mutation { logout }');
  } catch (error) {
    state.leaving = false;
    throw error;
  }
  forgetDrafts(state.me.id);
  forgetCursor(state.me.id);
  sessionStorage.removeItem(OPEN_ROOM_KEY);
  signOut('');
}

$('logout').addEventListener('click', () => busy($('logout'), () => logOut(false)));

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
      revoke.addEventListener('click', () => busy(revoke, async () => {
        await gql('mutation($id: ID!) { revokeSession(id: $id) }', { id: session.id });
        await loadSessions();
      }));
      li.append(revoke);
    }
    return li;
  }));
}

$('sessions-open').addEventListener('click', () => busy($('sessions-open'), async () => {
  $('session-list').replaceChildren();
  $('sessions').showModal();
  await loadSessions();
}));

$('sessions-close').addEventListener('click', () => $('sessions').close());

$('logout-everywhere').addEventListener('click', () => {
  if (!confirm('Log out of every session, this one included?')) return;
  busy($('logout-everywhere'), () => logOut(true));
});
// ---------------------------------------------------------------------------------------------
// Rooms

const ROOM_FIELDS = 'id name memberCount visibility topic isDirect myRole';
/// A room of mine as the room list shows it: with what I have not read there, the newest
/// message (to tell whether an event heard meanwhile is newer than the list), and for a direct
/// room the other person, whose presence it shows.
const MY_ROOM_FIELDS = `${ROOM_FIELDS} unreadCount mentionCount lastReadMessageId lastMessage { id }
  members(first: 2) { id username presence }`;

/// The lock shown beside a private room's name (direct rooms are private too).
function lockIcon() {
  const lock = document.createElement('i');
  lock.className = 'lock';
  lock.setAttribute('role', 'img');
  lock.setAttribute('aria-label', 'Private');
  lock.title = 'Private room';
  return lock;
}

function roomTitle(room) {
  const count = `${room.memberCount} member${room.memberCount === 1 ? '' : 's'}`;
  if (room.isDirect) return `Direct messages with ${room.name}`;
  return [room.name, room.topic, count].filter(Boolean).join(' · ');
}

function roomItem(room, joined) {
  const li = document.createElement('li');
  li.dataset.id = room.id;
  if (state.room && state.room.id === room.id) li.classList.add('current');
  if (room.visibility === 'PRIVATE') li.append(lockIcon());
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = `${room.name}`;
  name.title = roomTitle(room);
  if (joined && room.peer) li.append(presenceDot(room.peer));
  li.append(name);
  if (joined) {
    name.addEventListener('click', () => attempt(() => openRoom(room)));
    renderCounts(li, room);
  } else {
    const join = document.createElement('button');
    join.type = 'button';
    join.className = 'link';
    join.textContent = 'Join';
    join.addEventListener('click', () => busy(join, () => joinAndOpen(room)));
    li.append(join);
  }
  return li;
}

async function joinAndOpen(room) {
  await gql('mutation($r: ID!) { joinRoom(roomId: $r) { id } }', { r: room.id });
  await loadRooms();
  await openRoom(state.myRooms.get(room.id) || room);
}

/// Every room of mine with its counts, a page of 100 at a time (one may be in at most 1,000).
async function readMyRooms() {
  const mine = [];
  let after = null;
  for (;;) {
    const data = await gql(
      `query($after: String) { myRooms(first: 100, after: $after) { edges { node { ${MY_ROOM_FIELDS} } } pageInfo { hasNextPage endCursor } } }`,
      { after },
    );
    mine.push(...data.myRooms.edges.map((edge) => edge.node));
    if (!data.myRooms.pageInfo.hasNextPage) break;
    after = data.myRooms.pageInfo.endCursor;
  }
  return mine.map(settleCounts);
}

/// A room of mine as just listed, unless the list was read before a marker this page moved
/// since (the marker listed is behind it), or before a message `myEvents` told of since: then
/// the room keeps the counts it has, which the answer to that `markRead` or the event brought.
function settleCounts({ lastMessage, members, ...listed }) {
  listed.heard = lastMessage ? lastMessage.id : null;
  if (listed.isDirect && state.me) {
    listed.peer = (members || []).find((user) => user.id !== state.me.id) || null;
    if (listed.peer) heardPresence(listed.peer.id, listed.peer.presence);
  }
  const marked = state.read.get(listed.id);
  const known = state.myRooms.get(listed.id);
  const markerBehind = marked && (!listed.lastReadMessageId || listed.lastReadMessageId < marked);
  const eventNewer = known && known.heard && (!listed.heard || listed.heard < known.heard);
  if (markerBehind || eventNewer) {
    return known && 'unreadCount' in known
      ? { ...listed, unreadCount: known.unreadCount, mentionCount: known.mentionCount, lastReadMessageId: known.lastReadMessageId, heard: known.heard }
      : listed;
  }
  // The marker may have moved on elsewhere (another tab or device).
  if (listed.lastReadMessageId) state.read.set(listed.id, listed.lastReadMessageId);
  return listed;
}

async function loadRooms() {
  state.gone.clear();
  const listed = await readMyRooms();
  const data = await gql(`{ rooms(first: 50) { edges { node { ${ROOM_FIELDS} } } pageInfo { hasNextPage endCursor } } }`);
  // A room `myEvents` said I am out of while the list was read stays out.
  const mine = listed.filter((r) => !state.gone.has(r.id));
  state.myRooms = new Map(mine.map((r) => [r.id, r]));
  state.directory = new Map();
  $('my-rooms').replaceChildren(...mine.map((r) => roomItem(r, true)));
  $('all-rooms').replaceChildren();
  appendDirectory(data.rooms);
  await loadInvitations();
}

/// Reads my rooms' counts again and shows them; when the rooms themselves changed (joined or
/// left in another tab), the whole list.
async function refreshCounts() {
  state.gone.clear();
  const mine = (await readMyRooms()).filter((r) => !state.gone.has(r.id));
  if (!state.me) return;
  const shown = [...$('my-rooms').children].map((li) => li.dataset.id);
  if (shown.join() !== mine.map((r) => r.id).join()) {
    await loadRooms();
    return;
  }
  for (const room of mine) {
    const known = state.myRooms.get(room.id);
    if (known) Object.assign(known, { heard: room.heard, peer: room.peer || known.peer });
    setCounts(room);
  }
}

/// Takes a room's counts (from the list, or from `markRead`) and shows them in the room list.
function setCounts({ id, unreadCount, mentionCount, lastReadMessageId }) {
  const room = state.myRooms.get(id);
  if (!room) return;
  Object.assign(room, { unreadCount, mentionCount, lastReadMessageId });
  const li = $('my-rooms').querySelector(`li[data-id="${id}"]`);
  if (li) renderCounts(li, room);
}

/// The unread count of a room of mine and, apart, how many of those mention me.
function renderCounts(li, room) {
  for (const old of li.querySelectorAll('.count')) old.remove();
  const unread = room.unreadCount || 0;
  const mentions = room.mentionCount || 0;
  li.classList.toggle('unread', unread > 0);
  li.classList.toggle('mentioned', mentions > 0);
  const badge = (kind, text, label) => {
    const span = document.createElement('span');
    span.className = `badge count ${kind}`;
    span.textContent = text;
    span.title = label;
    span.setAttribute('aria-label', label);
    return span;
  };
  if (mentions > 0) li.append(badge('mention', `@${mentions}`, `${mentions} unread mention${mentions === 1 ? '' : 's'} of you`));
  if (unread > 0) li.append(badge('unread', unread > 99 ? '99+' : String(unread), `${unread} unread message${unread === 1 ? '' : 's'}`));
}

/// Runs `work` one at a time: a call while it runs asks for one more run after it, which
/// serves every call made meanwhile.
function oneAtATime(work) {
  let running = null;
  let again = false;
  return () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        if (state.me) await work();
      } while (again);
    })().finally(() => { running = null; });
    return running;
  };
}

/// Reads the room list's counts and the invitations again: after a reconnect with nothing to
/// resume from, or when `myEvents` tells of a room the page does not know (joined elsewhere).
const refreshSidebar = oneAtATime(async () => {
  await refreshCounts();
  if (state.me) await loadInvitations();
});

/// A room of mine is no longer (left, removed, or it is gone): out of the list, and back in
/// the directory when it is public and still there.
function forgetRoom(roomId, { gone = false } = {}) {
  const room = state.myRooms.get(roomId);
  state.gone.add(roomId);
  state.myRooms.delete(roomId);
  state.read.delete(roomId);
  const li = $('my-rooms').querySelector(`li[data-id="${roomId}"]`);
  if (li) li.remove();
  if (gone) {
    state.directory.delete(roomId);
    const listed = $('all-rooms').querySelector(`li[data-id="${roomId}"]`);
    if (listed) listed.remove();
    return;
  }
  const open = state.directory.get(roomId) || (room && room.visibility === 'PUBLIC' && !room.isDirect ? room : null);
  if (open && !$('all-rooms').querySelector(`li[data-id="${roomId}"]`)) {
    state.directory.set(roomId, open);
    $('all-rooms').append(roomItem(open, false));
  }
}

function appendDirectory(page) {
  for (const { node } of page.edges) {
    state.directory.set(node.id, node);
    if (!state.myRooms.has(node.id)) $('all-rooms').append(roomItem(node, false));
  }
  state.roomsAfter = page.pageInfo.endCursor;
  $('more-rooms').hidden = !page.pageInfo.hasNextPage;
}

$('more-rooms').addEventListener('click', () => busy($('more-rooms'), async () => {
  const data = await gql(
    `query($after: String) { rooms(first: 50, after: $after) { edges { node { ${ROOM_FIELDS} } } pageInfo { hasNextPage endCursor } } }`,
    { after: state.roomsAfter },
  );
  appendDirectory(data.rooms);
}));

$('new-room').addEventListener('submit', (event) => {
  event.preventDefault();
  const { name, topic, private: priv } = event.target.elements;
  busy(event.target.querySelector('button'), async () => {
    const { createRoom } = await gql(
      `mutation($n: String!, $v: RoomVisibility, $t: String) { createRoom(name: $n, visibility: $v, topic: $t) { ${ROOM_FIELDS} } }`,
      { n: name.value, v: priv.checked ? 'PRIVATE' : 'PUBLIC', t: topic.value.trim() || null },
    );
    event.target.reset();
    await loadRooms();
    await openRoom(createRoom);
  });
});

$('back').addEventListener('click', () => $('chat').classList.remove('in-room'));

// ---------------------------------------------------------------------------------------------
// Invitations: the rooms others asked me into, read with the rooms and again when `myEvents`
// tells of a new one (the list read is the truth: one declined elsewhere is not shown).

async function loadInvitations() {
  const { invitations } = await gql(
    `{ invitations { createdAt inviter { id username } room { ${ROOM_FIELDS} } } }`,
  );
  for (const invitation of invitations) meet(invitation.inviter);
  $('invitations').replaceChildren(...invitations.map(invitationItem));
  $('invitations-box').hidden = invitations.length === 0;
}

function invitationItem({ room, inviter, createdAt }) {
  const li = document.createElement('li');
  li.dataset.id = room.id;
  if (room.visibility === 'PRIVATE') li.append(lockIcon());
  const name = document.createElement('span');
  name.textContent = room.name;
  const from = document.createElement('small');
  from.className = 'muted';
  from.textContent = `from ${inviter.username}`;
  name.append(from);
  name.title = `${roomTitle(room)} · invited by ${inviter.username}, ${when(createdAt)}`;
  const decline = document.createElement('button');
  decline.type = 'button';
  decline.className = 'link';
  decline.textContent = 'Decline';
  decline.addEventListener('click', () => busy(decline, async () => {
    await gql('mutation($r: ID!) { declineInvitation(roomId: $r) }', { r: room.id });
    await loadInvitations();
  }));
  const join = document.createElement('button');
  join.type = 'button';
  join.className = 'link';
  join.textContent = 'Join';
  join.addEventListener('click', () => busy(join, () => joinAndOpen(room)));
  li.append(name, join, decline);
  return li;
}

const refreshInvitations = oneAtATime(loadInvitations);

// ---------------------------------------------------------------------------------------------
// The inbox: one `myEvents` subscription for everything about me across my rooms. Each event
// but presence carries a cursor; the last one is kept (per user, in this tab's sessionStorage)
// and the subscription, sent again at every reconnect, asks for what came `after` it, so
// nothing is missed and nothing comes twice. A sign-in reads the room list afresh and starts
// the stream anew (events replayed onto a list read later could undo what it shows). A cursor
// the server no longer takes (BAD_USER_INPUT naming `after`) is dropped: the list is read
// again and the stream starts anew. Presence is never replayed: what the page shows of it is
// read again after a reconnect.

const CURSOR_PREFIX = 'confab.cursor.';
const cursorOf = (userId) => sessionStorage.getItem(`${CURSOR_PREFIX}${userId}`);
const forgetCursor = (userId) => sessionStorage.removeItem(`${CURSOR_PREFIX}${userId}`);

function keepCursor(userId, cursor) {
  try {
    sessionStorage.setItem(`${CURSOR_PREFIX}${userId}`, cursor);
  } catch {
    // Storage full or refused: a reconnect reads the list again instead of resuming.
    forgetCursor(userId);
  }
}

const MY_EVENTS = `subscription($after: String) { myEvents(after: $after) {
  __typename
  ... on RoomActivity { cursor room { id unreadCount mentionCount lastReadMessageId } message { id roomId } }
  ... on ReadStateChanged { cursor roomId unreadCount mentionCount lastReadMessageId }
  ... on Invited { cursor invitation { room { id } } }
  ... on RemovedFromRoom { cursor roomId reason }
  ... on PresenceChanged { user { id username } presence }
} }`;

/// Starts my `myEvents` subscription (the live connection is started).
function watchInbox() {
  const me = state.me.id;
  forgetCursor(me);
  const subscribe = () => {
    state.inbox = live.subscribe(MY_EVENTS, () => ({ after: cursorOf(me) }), {
      next: (payload) => onInboxEvent(me, payload),
      error: (errors) => onInboxError(me, errors, subscribe),
      complete: () => {
        // Ended by the server without a word: follow again, from the cursor.
        state.inbox = null;
        setTimeout(() => { if (state.me && state.me.id === me && !state.inbox) subscribe(); }, 1_000);
      },
    });
  };
  subscribe();
}

function onInboxError(me, errors, subscribe) {
  state.inbox = null;
  if (!state.me || state.me.id !== me) return;
  const refused = errors.some((e) => e.extensions && e.extensions.code === 'BAD_USER_INPUT' && e.extensions.field === 'after');
  if (refused && cursorOf(me)) {
    // Too old to resume from: start anew, then read what it would have told.
    forgetCursor(me);
    subscribe();
    background(loadRooms);
    return;
  }
  showError(errors.map((e) => e.message).join('; '));
}

function onInboxEvent(me, payload) {
  if (!state.me || state.me.id !== me) return;
  if (payload.errors) {
    showError(payload.errors.map((e) => e.message).join('; '));
    return;
  }
  const event = payload.data.myEvents;
  if (event.cursor) keepCursor(me, event.cursor);
  switch (event.__typename) {
    case 'RoomActivity':
      onActivity(event.room, event.message);
      break;
    case 'ReadStateChanged':
      onReadState(event);
      break;
    case 'Invited':
      if (!state.myRooms.has(event.invitation.room.id)) background(refreshInvitations);
      break;
    case 'RemovedFromRoom':
      onRemoved(event.roomId, event.reason);
      break;
    case 'PresenceChanged':
      heardPresence(event.user.id, event.presence);
      break;
    default:
      break;
  }
}

/// A new message in a room of mine, with the room's counts as they now stand, unless this
/// page has moved my marker there past what they were counted from (the answer to that
/// `markRead` brings newer ones).
function onActivity(room, message) {
  const known = state.myRooms.get(room.id);
  if (!known) {
    // Joined on another device: the list is read again to show it in its place.
    background(refreshSidebar);
    return;
  }
  if (!known.heard || message.id > known.heard) known.heard = message.id;
  const marked = state.read.get(room.id);
  if (marked && (!room.lastReadMessageId || room.lastReadMessageId < marked)) return;
  if (room.lastReadMessageId) state.read.set(room.id, room.lastReadMessageId);
  setCounts(room);
}

/// My marker moved (here or on another device): the counts where it now stands, unless this
/// page has since asked for it to move further.
function onReadState(event) {
  const marked = state.read.get(event.roomId);
  if (marked && (!event.lastReadMessageId || event.lastReadMessageId < marked)) return;
  if (event.lastReadMessageId) state.read.set(event.roomId, event.lastReadMessageId);
  setCounts({ id: event.roomId, ...event });
}

/// Out of a room (on any device): it leaves the list; the open room closes, saying why.
function onRemoved(roomId, reason) {
  const open = state.room && state.room.id === roomId ? state.room : null;
  forgetRoom(roomId, { gone: reason === 'deleted' });
  if (!open) return;
  if (reason === 'left' && state.leavingRoom === roomId) return; // this page's own Leave
  const { name } = open;
  const why = {
    left: `You left ${name} on another device.`,
    kicked: `You were removed from ${name}.`,
    banned: `You were banned from ${name}.`,
    deleted: `${name} was deleted.`,
  }[reason] || `You are no longer in ${name}.`;
  if (reason === 'kicked' || reason === 'banned') {
    // The room's own stream says by whom, which this does not: it may come a moment later.
    setTimeout(() => { if (state.room && state.room.id === roomId) closeRoom(why); }, 1_500);
  } else {
    closeRoom(why);
  }
}

// ---------------------------------------------------------------------------------------------
// Presence: a dot for each member of the open room and for the other person of a direct room,
// read with them and kept up by `PresenceChanged` from `myEvents`.

const PRESENCE_WORDS = { ONLINE: 'online', AWAY: 'away', OFFLINE: 'offline' };

function presenceDot(user) {
  const dot = document.createElement('i');
  dot.dataset.user = user.id;
  dot.setAttribute('role', 'img');
  if (user.presence) heardPresence(user.id, user.presence);
  renderDot(dot, state.presence.get(user.id));
  return dot;
}

function renderDot(dot, presence) {
  const word = PRESENCE_WORDS[presence] || 'offline';
  dot.className = `presence ${word}`;
  dot.title = word;
  dot.setAttribute('aria-label', word);
}

/// Someone's presence as last heard, shown on every dot of theirs.
function heardPresence(userId, presence) {
  if (!PRESENCE_WORDS[presence]) return;
  state.presence.set(userId, presence);
  for (const dot of document.querySelectorAll(`i.presence[data-user="${CSS.escape(userId)}"]`)) renderDot(dot, presence);
}

/// Reads again the presence of the other person of each direct room (at most 100 at once).
async function refreshPeers() {
  const direct = [...state.myRooms.values()].filter((room) => room.isDirect).slice(0, 100);
  if (direct.length === 0) return;
  const variables = {};
  const fields = direct.map((room, i) => {
    variables[`r${i}`] = room.id;
    return `r${i}: room(id: $r${i}) { members(first: 2) { id presence } }`;
  });
  const declared = direct.map((_, i) => `$r${i}: ID!`).join(', ');
  const data = await gql(`query(${declared}) { ${fields.join(' ')} }`, variables);
  for (const found of Object.values(data)) {
    for (const user of (found && found.members) || []) heardPresence(user.id, user.presence);
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible' || !state.me) return;
  markSeenSoon(); // what came in while the page was away, if it is in view
});

// ---------------------------------------------------------------------------------------------
// People: who is in the shown room, with their roles; inviting, direct messages, moderation

const RANK = { OWNER: 3, ADMIN: 2, MEMBER: 1 };
const rankOf = (role) => RANK[role] || 0;

/// Remembers a user the page came across, to find them by name when inviting.
function meet(user) {
  if (user && user.id && user.username) state.people.set(user.username.toLowerCase(), { id: user.id, username: user.username });
}

/// Whether I moderate the shown room and `userId` (a member, or someone who left) ranks
/// below me there: then I may delete their messages, kick and ban them.
function outranks(userId) {
  if (!state.room || !state.members || userId === state.me.id) return false;
  const mine = rankOf(state.room.myRole);
  if (mine < RANK.ADMIN) return false;
  const member = state.members.get(userId);
  return mine > rankOf(member && member.role);
}

/// The owner and admins of a private room invite to it; a public room needs no invitation, and
/// a direct room takes nobody else.
function mayInvite(room) {
  if (!room || room.isDirect || !room.myRole) return false;
  return room.visibility === 'PRIVATE' && rankOf(room.myRole) >= RANK.ADMIN;
}

const MEMBERSHIPS = `memberships(first: 100, after: $after) {
  edges { node { role user { id username presence } } } pageInfo { hasNextPage endCursor } }`;

/// The room (null when I may no longer see it) and, unless `room` says I may not list them
/// (a private room I am not in), its members: at most 1,000, 100 a request.
async function roomWithMembers(roomId) {
  let after = null;
  let room = null;
  const members = [];
  for (let page = 0; page < 10; page += 1) {
    const fields = page === 0 ? `${ROOM_FIELDS} ${MEMBERSHIPS}` : MEMBERSHIPS;
    let data;
    try {
      data = await gql(`query($id: ID!, $after: String) { room(id: $id) { ${fields} } }`, { id: roomId, after });
    } catch (error) {
      // Invited, not a member yet: the room may be seen, its members not.
      if (error.code !== 'FORBIDDEN' || page > 0) throw error;
      const { room: seen } = await gql(`query($id: ID!) { room(id: $id) { ${ROOM_FIELDS} } }`, { id: roomId });
      return { room: seen, members: null };
    }
    if (!data.room) return { room: null, members: null };
    if (page === 0) room = data.room;
    const { edges, pageInfo } = data.room.memberships;
    members.push(...edges.map((edge) => edge.node));
    if (!pageInfo.hasNextPage) break;
    after = pageInfo.endCursor;
  }
  delete room.memberships;
  for (const member of members) meet(member.user);
  return { room, members };
}

/// Reads the shown room again: its name, topic, my role, its members.
async function loadRoomDetails(roomId) {
  const { room, members } = await roomWithMembers(roomId);
  if (!state.room || state.room.id !== roomId) return;
  if (!room || !room.myRole) {
    forgetRoom(roomId, { gone: !room });
    closeRoom(`You are no longer in ${state.room.name}.`);
    return;
  }
  state.room = room;
  // The room's counts stay: they are not read here.
  state.myRooms.set(room.id, { ...state.myRooms.get(room.id), ...room });
  state.members = new Map(members.map((member) => [member.user.id, member]));
  renderRoomHead();
  renderMembers();
  redrawMessages();
}

// One reading at a time; events that arrive meanwhile ask for one more after it.
let detailsLoading = null;
let detailsAgain = false;
function refreshRoom() {
  if (detailsLoading) {
    detailsAgain = true;
    return detailsLoading;
  }
  detailsLoading = (async () => {
    do {
      detailsAgain = false;
      if (state.room) await loadRoomDetails(state.room.id);
    } while (detailsAgain);
  })().finally(() => { detailsLoading = null; });
  return detailsLoading;
}

function renderRoomHead() {
  const { room } = state;
  $('room-name').textContent = room ? room.name : 'Pick a room';
  $('room-name').title = room ? roomTitle(room) : '';
  $('room-lock').hidden = !room || room.visibility !== 'PRIVATE';
  $('room-topic').textContent = (room && room.topic) || '';
  $('room-topic').hidden = !(room && room.topic);
  $('members').hidden = !room;
  $('leave').hidden = !room;
  if (room) $('members').textContent = `${room.memberCount} member${room.memberCount === 1 ? '' : 's'}`;
  $('invite').hidden = !mayInvite(room);
}

function renderMembers() {
  const members = state.members ? [...state.members.values()] : [];
  $('member-list').replaceChildren(...members.map(memberItem));
  renderKnownUsers();
}

/// The usernames offered when inviting: everyone the page knows of who is not here yet.
function renderKnownUsers() {
  if (!state.me) return;
  $('known-users').replaceChildren(...[...state.people.values()]
    .filter((user) => user.id !== state.me.id && !(state.members && state.members.has(user.id)))
    .sort((a, b) => a.username.localeCompare(b.username))
    .map((user) => {
      const option = document.createElement('option');
      option.value = user.username;
      return option;
    }));
}

function memberItem({ user, role }) {
  const li = document.createElement('li');
  li.dataset.id = user.id;
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = user.username;
  li.append(presenceDot(user), name);
  if (role === 'OWNER' || role === 'ADMIN') {
    const badge = document.createElement('span');
    badge.className = `badge role ${role.toLowerCase()}`;
    badge.textContent = role;
    li.append(badge);
  }
  if (user.id === state.me.id) {
    const you = document.createElement('span');
    you.className = 'muted';
    you.textContent = 'you';
    li.append(you);
    return li;
  }
  if (!state.room.isDirect) {
    li.append(action('Message', () => openDirectRoom(user), `Direct messages with ${user.username}`));
  }
  if (outranks(user.id)) {
    li.append(
      action('Kick', () => kick(user), `Remove ${user.username} from the room (they may come back)`),
      action('Ban', () => ban(user), `Remove ${user.username} and keep them out`),
    );
  }
  return li;
}

$('members').addEventListener('click', () => {
  const open = $('people').hidden;
  $('people').hidden = !open;
  $('members').setAttribute('aria-expanded', String(open));
});

async function openDirectRoom(user) {
  const { directRoom } = await gql(`mutation($u: ID!) { directRoom(userId: $u) { ${ROOM_FIELDS} } }`, { u: user.id });
  await loadRooms();
  await openRoom(directRoom);
}

async function kick(user) {
  const roomId = state.room.id;
  if (!confirm(`Remove ${user.username} from ${state.room.name}? They may come back.`)) return;
  await gql('mutation($r: ID!, $u: ID!) { kickMember(roomId: $r, userId: $u) }', { r: roomId, u: user.id });
  if (state.room && state.room.id === roomId) await refreshRoom();
}

async function ban(user) {
  const roomId = state.room.id;
  const reason = prompt(`Ban ${user.username} from ${state.room.name}? They cannot come back until unbanned. Reason (optional):`, '');
  if (reason === null) return;
  await gql('mutation($r: ID!, $u: ID!, $why: String) { banMember(roomId: $r, userId: $u, reason: $why) }',
    { r: roomId, u: user.id, why: reason.trim() || null });
  if (state.room && state.room.id === roomId) await refreshRoom();
}

/// Someone to invite, by username: among the people the page has come across, else among the
/// members of my rooms and of the public rooms listed, read one room at a time (the API finds
/// users by id only).
async function findUser(username) {
  const key = username.trim().toLowerCase();
  if (state.people.has(key)) return state.people.get(key);
  const rooms = [...new Set([...state.myRooms.keys(), ...state.directory.keys()])];
  for (const roomId of rooms) {
    if (state.scanned.has(roomId)) continue;
    state.scanned.add(roomId);
    try {
      await roomWithMembers(roomId);
    } catch {
      continue; // gone, or not listable to me: the next
    }
    if (state.people.has(key)) return state.people.get(key);
  }
  // Not found: members change, so a later try reads them again.
  state.scanned.clear();
  return null;
}

$('invite').elements.username.addEventListener('focus', renderKnownUsers);

$('invite').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = event.target.elements.username;
  const room = state.room;
  $('invite-result').textContent = '';
  busy(event.target.querySelector('button'), async () => {
    const user = await findUser(input.value);
    if (!user) {
      throw new Error(`No user named ${input.value.trim()} shares a room with you or is in a public room.`);
    }
    await gql('mutation($r: ID!, $u: ID!) { inviteToRoom(roomId: $r, userId: $u) { createdAt } }', { r: room.id, u: user.id });
    input.value = '';
    if (state.room && state.room.id === room.id) $('invite-result').textContent = `Invited ${user.username}.`;
  });
});

// ---------------------------------------------------------------------------------------------
// One room: history, live events, sending

const MESSAGE_FIELDS = 'id roomId body createdAt editedAt sender { id username } mentions { id username }';
const ROOM_EVENTS = `subscription($r: ID!, $after: ID) { roomEvents(roomId: $r, after: $after) {
  __typename
  ... on MessageAdded { message { ${MESSAGE_FIELDS} } }
  ... on MessageEdited { message { ${MESSAGE_FIELDS} } }
  ... on MessageDeleted { messageId deletedBy { id username } }
  ... on MemberJoined { user { id username } }
  ... on MemberLeft { user { id username } }
  ... on MemberKicked { user { id username } by { id username } }
  ... on MemberBanned { user { id username } by { id username } reason }
  ... on MemberRoleChanged { user { id username } role }
  ... on RoomUpdated { room { ${ROOM_FIELDS} } }
  ... on Typing { user { username } typing }
} }`;

async function openRoom(room) {
  if (state.subscription) live.unsubscribe(state.subscription);
  state.room = room;
  state.members = null;
  state.messages = new Map();
  state.oldest = null;
  $('chat').classList.add('in-room');
  renderRoomHead();
  $('member-list').replaceChildren();
  $('invite-result').textContent = '';
  $('messages').replaceChildren();
  $('typing').textContent = '';
  $('composer').hidden = false;
  restoreDraft();
  sessionStorage.setItem(OPEN_ROOM_KEY, JSON.stringify({ user: state.me.id, room: room.id }));
  watchMessages();
  for (const li of document.querySelectorAll('.rooms li')) li.classList.toggle('current', li.dataset.id === room.id);
  // Live first, then the history: a message sent in between shows once, in its place.
  state.subscription = live.subscribe(ROOM_EVENTS, () => ({ r: room.id, after: state.newest.get(room.id) || null }), {
    next: (payload) => onRoomEvent(room.id, payload),
    error: (errors) => onRoomError(room.id, errors),
  });
  await refreshRoom();
  if (state.room && state.room.id === room.id) await loadNewest(room.id);
}

/// Leaves the room view (removed from the room, or it is gone), saying why. Unless `forget`
/// is false (signing out), a reload no longer opens it.
function closeRoom(why, { forget = true } = {}) {
  if (forget) sessionStorage.removeItem(OPEN_ROOM_KEY);
  if (state.subscription) live.unsubscribe(state.subscription);
  Object.assign(state, { room: null, members: null, subscription: null, oldest: null, messages: new Map() });
  watchMessages();
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  renderRoomHead();
  $('people').hidden = true;
  $('members').setAttribute('aria-expanded', 'false');
  $('member-list').replaceChildren();
  $('invite-result').textContent = '';
  $('messages').replaceChildren();
  $('typing').textContent = '';
  $('older').hidden = true;
  $('composer').hidden = true;
  composer.elements.body.value = ''; // kept as the room's draft
  editing.clear();
  $('chat').classList.remove('in-room');
  for (const li of document.querySelectorAll('.rooms li.current')) li.classList.remove('current');
  if (why) showError(why);
}

/// Opens again the room that was open in this tab before a reload, or before the session
/// ended, if it is still one of mine.
async function reopenRoom() {
  let kept = null;
  try {
    kept = JSON.parse(sessionStorage.getItem(OPEN_ROOM_KEY) || 'null');
  } catch {
    // Unreadable: nothing to open.
  }
  if (!kept || !state.me || kept.user !== state.me.id || state.room) return;
  const room = state.myRooms.get(kept.room);
  if (room) await openRoom(room);
  else sessionStorage.removeItem(OPEN_ROOM_KEY);
}

$('leave').addEventListener('click', () => {
  const { room } = state;
  if (!room) return;
  const back = room.visibility === 'PRIVATE' && !room.isDirect ? ' You will need an invitation to come back.' : '';
  if (!confirm(`Leave ${room.name}?${back}`)) return;
  busy($('leave'), async () => {
    state.leavingRoom = room.id;
    try {
      await gql('mutation($r: ID!) { leaveRoom(roomId: $r) }', { r: room.id });
    } finally {
      state.leavingRoom = null;
    }
    forgetRoom(room.id);
    if (state.room && state.room.id === room.id) closeRoom('');
  });
});

/// The server ended the room's subscription: a member removed (in another tab, or while this
/// page was away) is refused with FORBIDDEN, a room gone with NOT_FOUND.
function onRoomError(roomId, errors) {
  const codes = errors.map((e) => e.extensions && e.extensions.code);
  if (state.room && state.room.id === roomId && (codes.includes('FORBIDDEN') || codes.includes('NOT_FOUND'))) {
    forgetRoom(roomId, { gone: codes.includes('NOT_FOUND') });
    closeRoom(`You are no longer in ${state.room.name}.`);
    return;
  }
  showError(errors.map((e) => e.message).join('; '));
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

$('older').addEventListener('click', () => busy($('older'), async () => {
  const roomId = state.room.id;
  const { messages } = await gql(
    `query($r: ID!, $before: String) { messages(roomId: $r, last: 50, before: $before) { edges { node { ${MESSAGE_FIELDS} } } pageInfo { hasPreviousPage startCursor } } }`,
    { r: roomId, before: state.oldest },
  );
  if (!state.room || state.room.id !== roomId) return;
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
  const me = state.me.id;
  switch (event.__typename) {
    case 'MessageAdded':
    case 'MessageEdited':
      upsertMessage(event.message);
      clearTyping(event.message.sender.username);
      break;
    case 'MessageDeleted':
      markDeleted(event.messageId, event.deletedBy);
      break;
    case 'MemberJoined':
      meet(event.user);
      notice(`${event.user.username} joined`);
      background(refreshRoom);
      break;
    case 'MemberLeft':
      notice(`${event.user.username} left`);
      background(refreshRoom);
      break;
    case 'MemberKicked':
    case 'MemberBanned': {
      const banned = event.__typename === 'MemberBanned';
      const why = banned && event.reason ? `: ${event.reason}` : '';
      if (event.user.id === me) {
        forgetRoom(roomId);
        closeRoom(`You were removed from ${state.room.name} by ${event.by.username}${banned ? ` (banned${why})` : ''}.`);
        return;
      }
      notice(`${event.user.username} was ${banned ? 'banned' : 'removed'} by ${event.by.username}${why}`);
      background(refreshRoom);
      break;
    }
    case 'MemberRoleChanged':
      notice(`${event.user.id === me ? 'You are' : `${event.user.username} is`} now ${event.role.toLowerCase()}`);
      background(refreshRoom);
      break;
    case 'RoomUpdated':
      // The room as its members see it; my role, members and the room lists are read again.
      state.room = { ...state.room, ...event.room, myRole: state.room.myRole };
      renderRoomHead();
      notice('The room was updated');
      background(refreshRoom);
      background(loadRooms);
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

/// Draws the shown messages again: what I may do with each depends on my role and theirs.
function redrawMessages() {
  for (const li of document.querySelectorAll('#messages li[data-id]')) {
    const message = state.messages.get(li.dataset.id);
    if (message) upsertMessage(message);
  }
}

/// Shows a message in id order (ids are chronological), or updates it where it stands. A
/// message being edited keeps its editor.
function upsertMessage(message) {
  const newest = state.newest.get(state.room.id);
  if (!newest || message.id > newest) state.newest.set(state.room.id, message.id);
  state.messages.set(message.id, message);
  meet(message.sender);
  let li = messageElement(message.id);
  if (li && li.classList.contains('deleted')) return;
  if (!li) {
    li = document.createElement('li');
    li.dataset.id = message.id;
    li.dataset.at = message.createdAt;
    const list = $('messages');
    const after = [...list.querySelectorAll('li[data-id]')].find((other) => other.dataset.id > message.id);
    list.insertBefore(li, after || null);
    if (viewing.observer) viewing.observer.observe(li);
    renderDays();
  }
  li.classList.toggle('mentions-me', mentionsMe(message));
  const meta = messageMeta(message);
  if (message.editedAt) meta.append(' · edited');
  if (state.me && message.sender.id === state.me.id) {
    meta.append(action('Edit', () => editMessage(message.id)), action('Delete', () => deleteMessage(message)));
  } else if (outranks(message.sender.id)) {
    meta.append(action('Delete', () => deleteMessage(message), 'Delete as a moderator'));
  }
  let body = editing.has(message.id) && li.querySelector('form.edit');
  if (!body) {
    body = document.createElement('div');
    body.className = 'body';
    body.replaceChildren(...messageBody(message));
  }
  li.replaceChildren(meta, body);
}

/// A message's author and time.
function messageMeta(message) {
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = message.sender.username;
  const time = document.createElement('time');
  time.dateTime = message.createdAt;
  time.textContent = stamp(message.createdAt);
  time.title = when(message.createdAt);
  meta.append(author, time);
  return meta;
}

/// A deleted message stays where it was, saying so, and by whom when a moderator deleted it.
function markDeleted(id, by) {
  const message = state.messages.get(id);
  state.messages.delete(id);
  editing.delete(id);
  viewing.visible.delete(id);
  const li = messageElement(id);
  if (!li || li.classList.contains('deleted')) return;
  if (viewing.observer) viewing.observer.unobserve(li);
  li.classList.remove('mentions-me');
  li.classList.add('deleted');
  const body = document.createElement('div');
  body.className = 'body';
  body.textContent = by ? `message deleted by ${by.username}` : 'message deleted';
  li.replaceChildren(...(message ? [messageMeta(message)] : []), body);
}

// ---------------------------------------------------------------------------------------------
// Dates: a message's time says its date too when it is not from today, and a divider stands
// where the day changes (by this computer's calendar).

const sameDay = (a, b) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth()
  && a.getDate() === b.getDate();

/// "14:05" today; "Nov 28, 14:05" on another day this year; "Nov 28, 2025, 14:05" before.
function stamp(iso) {
  const at = new Date(iso);
  const now = new Date();
  const time = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (sameDay(at, now)) return time;
  const year = at.getFullYear() === now.getFullYear() ? {} : { year: 'numeric' };
  return `${at.toLocaleDateString([], { month: 'short', day: 'numeric', ...year })}, ${time}`;
}

/// A divider's words: "Today", "Yesterday", or the date.
function dayName(at) {
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (sameDay(at, now)) return 'Today';
  if (sameDay(at, yesterday)) return 'Yesterday';
  const year = at.getFullYear() === now.getFullYear() ? {} : { year: 'numeric' };
  return at.toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric', ...year });
}

/// Puts a divider before the first message shown of each day.
function renderDays() {
  const list = $('messages');
  for (const old of list.querySelectorAll('li.day')) old.remove();
  let last = null;
  for (const li of list.querySelectorAll('li[data-id]')) {
    const at = new Date(li.dataset.at);
    if (last && sameDay(at, last)) continue;
    last = at;
    const day = document.createElement('li');
    day.className = 'day';
    day.setAttribute('role', 'separator');
    day.textContent = dayName(at);
    list.insertBefore(day, li);
  }
}

/// Whether a message mentions me (the server names the members it mentions).
function mentionsMe(message) {
  return Boolean(state.me && message.mentions && message.mentions.some((user) => user.id === state.me.id));
}

/// A message's body as DOM nodes (never parsed as HTML): text, its web links as links, and
/// the `@name` of each member it mentions emphasised.
function messageBody(message) {
  const { body } = message;
  const parts = [];
  let done = 0;
  for (const found of body.matchAll(LINK)) {
    const text = trimLink(found[0]);
    const href = safeHref(text);
    if (!href) continue;
    const link = document.createElement('a');
    link.href = href;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    link.textContent = text;
    parts.push(...withMentions(message, body.slice(done, found.index)), link);
    done = found.index + text.length;
  }
  parts.push(...withMentions(message, body.slice(done)));
  return parts;
}

/// A web address in a message: http or https only (never `javascript:`, `data:` and the like).
const LINK = /\bhttps?:\/\/[^\s<>"]+/gi;

/// A link less the punctuation that ends the sentence around it; a `)` stays when the link
/// opened one.
function trimLink(text) {
  let end = text.length;
  while (end > 0 && /[.,;:!?'"*)\]}]/.test(text[end - 1])) {
    if (text[end - 1] === ')') {
      const head = text.slice(0, end);
      if (head.split('(').length > head.split(')').length - 1) break;
    }
    end -= 1;
  }
  return text.slice(0, end);
}

/// The address a link may point to, or null: only an http or https URL that parses.
function safeHref(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
}

/// Text as text nodes, with the `@name` of each member the message mentions emphasised. A
/// mention is found as the server finds it: an `@` that starts the text or follows a
/// character no name has, then a name's characters less a trailing `.` or `-`.
function withMentions(message, text) {
  const names = new Set((message.mentions || []).map((user) => user.username.toLowerCase()));
  if (names.size === 0) return text ? [text] : [];
  const me = state.me ? state.me.username.toLowerCase() : null;
  const parts = [];
  let done = 0;
  for (const found of text.matchAll(/(?<![A-Za-z0-9_.-])@([A-Za-z0-9_.-]+)/g)) {
    const name = found[1].replace(/[.-]+$/, '');
    const key = name.toLowerCase();
    if (!names.has(key)) continue;
    const mention = document.createElement('strong');
    mention.className = key === me ? 'mention me' : 'mention';
    mention.textContent = `@${name}`;
    parts.push(text.slice(done, found.index), mention);
    done = found.index + 1 + name.length;
  }
  parts.push(text.slice(done));
  return parts.filter((part) => part !== '');
}

// ---------------------------------------------------------------------------------------------
// Read markers: the newest message of the open room that has come into view (at least half of
// it, or half the list's height for a long one) is marked read, once the messages have settled
// for a moment and at most about once a second, and only while the page is shown.

const MARK_READ_SETTLE = 300;
const MARK_READ_EVERY = 1_000;
const viewing = {
  observer: null,
  visible: new Set(), // ids of the open room's messages in view
  timer: null,
  lastSent: 0,
};

/// Starts watching the open room's messages come into view (or stops, with no room open).
function watchMessages() {
  if (viewing.observer) viewing.observer.disconnect();
  viewing.visible.clear();
  clearTimeout(viewing.timer);
  viewing.timer = null;
  viewing.observer = state.room
    ? new IntersectionObserver(onSeen, { root: $('messages'), threshold: [0, 0.5, 1] })
    : null;
}

function onSeen(entries) {
  for (const entry of entries) {
    const { id } = entry.target.dataset;
    const half = entry.rootBounds ? entry.rootBounds.height / 2 : Infinity;
    const inView = entry.isIntersecting && entry.target.isConnected
      && (entry.intersectionRatio >= 0.5 || entry.intersectionRect.height >= half);
    if (inView) viewing.visible.add(id);
    else viewing.visible.delete(id);
  }
  markSeenSoon();
}

/// The newest message in view, when one in view past my marker is someone else's (my own are
/// never unread): the marker to set.
function unreadInView() {
  if (!state.room || document.visibilityState !== 'visible') return null;
  const marked = state.read.get(state.room.id);
  let newest = null;
  let unread = false;
  for (const id of viewing.visible) {
    const message = state.messages.get(id);
    if (!message || (marked && id <= marked)) continue;
    if (!newest || id > newest) newest = id;
    if (message.sender.id !== state.me.id) unread = true;
  }
  return unread ? newest : null;
}

function markSeenSoon() {
  if (viewing.timer || !unreadInView()) return;
  const wait = Math.max(MARK_READ_SETTLE, viewing.lastSent + MARK_READ_EVERY - Date.now());
  viewing.timer = setTimeout(markSeen, wait);
}

async function markSeen() {
  viewing.timer = null;
  const room = state.room;
  const newest = unreadInView();
  if (!newest) return;
  const before = state.read.get(room.id);
  viewing.lastSent = Date.now();
  state.read.set(room.id, newest);
  let answer;
  try {
    answer = await gql(
      'mutation($r: ID!, $m: ID!) { markRead(roomId: $r, messageId: $m) { id unreadCount mentionCount lastReadMessageId } }',
      { r: room.id, m: newest },
    );
  } catch {
    // Not marked (the message was deleted meanwhile, or the server is out of reach): the
    // next message to come into view tries again.
    if (state.read.get(room.id) === newest) {
      if (before) state.read.set(room.id, before);
      else state.read.delete(room.id);
    }
    return;
  }
  const marked = answer.markRead;
  // A later `markRead` of this page, under way, brings newer counts.
  const asked = state.read.get(room.id);
  if (!asked || !marked.lastReadMessageId || marked.lastReadMessageId >= asked) {
    if (marked.lastReadMessageId) state.read.set(room.id, marked.lastReadMessageId);
    setCounts(marked);
  }
  markSeenSoon(); // more came into view meanwhile
}

function action(label, run, title = '') {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'link';
  button.textContent = label;
  button.title = title;
  button.addEventListener('click', () => busy(button, run));
  return button;
}

// Editing in place: the message's body becomes an editor; Enter saves, Shift+Enter starts a
// new line, Escape (or Cancel) puts the message back as it was.
const editing = new Set(); // ids of the messages being edited

function editMessage(id) {
  const message = state.messages.get(id);
  const li = messageElement(id);
  if (!message || !li || editing.has(id)) return;
  editing.add(id);
  const form = document.createElement('form');
  form.className = 'edit';
  const input = document.createElement('textarea');
  input.name = 'body';
  input.maxLength = 4000;
  input.required = true;
  input.rows = Math.min(8, message.body.split('\n').length);
  input.value = message.body;
  input.setAttribute('aria-label', 'Edit message');
  const save = document.createElement('button');
  save.type = 'submit';
  save.textContent = 'Save';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.className = 'secondary';
  cancel.textContent = 'Cancel';
  const hint = document.createElement('span');
  hint.className = 'muted';
  hint.textContent = 'Enter to save · Escape to cancel';
  const row = document.createElement('div');
  row.className = 'row';
  row.append(save, cancel, hint);
  form.append(input, row);

  const close = () => {
    editing.delete(id);
    const now = state.messages.get(id);
    if (now && form.isConnected) upsertMessage(now);
  };
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === 'Escape') {
      event.preventDefault();
      close();
    }
  });
  cancel.addEventListener('click', close);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const body = input.value;
    if (body === state.messages.get(id)?.body) {
      close();
      return;
    }
    busy(save, async () => {
      const { editMessage: edited } = await gql(
        `mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { ${MESSAGE_FIELDS} } }`,
        { m: id, b: body },
      );
      if (!state.room || state.room.id !== edited.roomId) return;
      editing.delete(id);
      upsertMessage(edited);
    });
  });

  li.querySelector('.body').replaceWith(form);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

async function deleteMessage(message) {
  if (!confirm('Delete this message?')) return;
  await gql('mutation($m: ID!) { deleteMessage(messageId: $m) }', { m: message.id });
  // A moderator's deletion says who deleted it.
  markDeleted(message.id, message.sender.id === state.me.id ? null : state.me);
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
  saveDraft();
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
  const { room } = state;
  if (!body.trim() || !room) return;
  pendingClientId = pendingClientId || crypto.randomUUID();
  busy(composer.querySelector('button'), async () => {
    const { sendMessage } = await gql(
      `mutation($r: ID!, $b: String!, $c: String) { sendMessage(roomId: $r, body: $b, clientId: $c) { ${MESSAGE_FIELDS} } }`,
      { r: room.id, b: body, c: pendingClientId },
    );
    pendingClientId = null;
    clearTimeout(typingTimer);
    typingSentAt = 0;
    if (draftOf(room.id) === body) forgetDraft(room.id);
    if (!state.room || state.room.id !== room.id) return;
    if (input.value === body) input.value = '';
    upsertMessage(sendMessage);
    scrollDown();
  }).finally(() => input.focus());
});

// Drafts: what is typed in a room's composer is kept until it is sent, per user and room, in
// this tab's sessionStorage: switching rooms, a reload, or a session that ends (signing in
// again) loses nothing. Logging out on purpose forgets them.
const DRAFT_PREFIX = 'confab.draft.';
const draftKey = (roomId) => `${DRAFT_PREFIX}${state.me.id}.${roomId}`;
const draftOf = (roomId) => (state.me ? sessionStorage.getItem(draftKey(roomId)) : null);
const forgetDraft = (roomId) => state.me && sessionStorage.removeItem(draftKey(roomId));

function saveDraft() {
  if (!state.me || !state.room) return;
  const text = composer.elements.body.value;
  try {
    if (text) sessionStorage.setItem(draftKey(state.room.id), text);
    else forgetDraft(state.room.id);
  } catch {
    // Storage full or refused: the draft is only in the composer.
  }
}

function restoreDraft() {
  composer.elements.body.value = (state.room && draftOf(state.room.id)) || '';
}

function forgetDrafts(userId) {
  const prefix = `${DRAFT_PREFIX}${userId}.`;
  const keys = [];
  for (let i = 0; i < sessionStorage.length; i += 1) {
    const key = sessionStorage.key(i);
    if (key && key.startsWith(prefix)) keys.push(key);
  }
  for (const key of keys) sessionStorage.removeItem(key);
}

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

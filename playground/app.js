// Confab's chat page: plain ES module, no build step, no CDN. HTTP for queries and mutations,
// a small graphql-transport-ws client for live room events. After a reconnect it resubscribes
// with `after` = the newest message it has, so nothing sent meanwhile is lost.

const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem('confab.token'),
  me: null,
  room: null, // { id, name }
  myRooms: new Map(),
  roomsAfter: null,
  oldest: null, // cursor of the oldest message shown
  newest: new Map(), // room id -> newest message id seen
  subscription: null,
  typing: new Map(), // username -> timer
};

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
    if (error.code === 'UNAUTHENTICATED' && state.me) {
      signOut('Your session has ended; log in again.');
    } else {
      showError(explain(error));
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP

async function gql(query, variables = {}) {
  const headers = { 'content-type': 'application/json' };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
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
  return body.data;
}

// ---------------------------------------------------------------------------------------------
// A minimal graphql-transport-ws client

class Live {
  constructor() {
    this.subs = new Map();
    this.nextId = 1;
    this.retry = 0;
    this.socket = null;
    this.acked = false;
    this.stopped = true;
    this.onReconnect = () => {};
  }

  start(token) {
    this.token = token;
    this.stopped = false;
    this.open(false);
  }

  stop() {
    this.stopped = true;
    this.subs.clear();
    if (this.socket) this.socket.close(1000, 'signed out');
  }

  open(reconnecting) {
    const socket = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
    this.socket = socket;
    this.acked = false;
    setStatus(reconnecting ? 'reconnecting' : 'connecting');
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${this.token}` } }));
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
      if (this.stopped || socket !== this.socket) return;
      if (event.code === 4403) {
        signOut('Your session has ended; log in again.');
        return;
      }
      if (event.code === 1000 && this.subs.size === 0) {
        // Closed for running nothing: connect again when there is something to watch.
        this.socket = null;
        setStatus('idle');
        return;
      }
      setStatus('reconnecting');
      const delay = Math.min(10_000, 500 * 2 ** this.retry++);
      setTimeout(() => { if (!this.stopped) this.open(true); }, delay);
    };
  }

  /// `variables` may be a function: it is asked again at every (re)subscription.
  subscribe(query, variables, handlers) {
    const id = String(this.nextId++);
    const entry = { query, variables, ...handlers };
    this.subs.set(id, entry);
    if (this.acked) this.send(id, entry);
    else if (!this.socket && !this.stopped) this.open(false);
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

async function signedIn(token) {
  state.token = token;
  localStorage.setItem('confab.token', token);
  const { me } = await gql('{ me { id username } }');
  state.me = me;
  $('who').textContent = me.username;
  $('who').hidden = false;
  $('logout').hidden = false;
  $('signin').hidden = true;
  $('chat').hidden = false;
  live.start(token);
  await loadRooms();
}

function signOut(reason) {
  live.stop();
  setStatus('offline');
  localStorage.removeItem('confab.token');
  Object.assign(state, { token: null, me: null, room: null, subscription: null });
  $('who').hidden = true;
  $('logout').hidden = true;
  $('chat').hidden = true;
  $('signin').hidden = false;
  showError(reason || '');
}

$('auth-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const action = event.submitter && event.submitter.value === 'register' ? 'register' : 'login';
  attempt(async () => {
    const data = await gql(
      `mutation($u: String!, $p: String!) { ${action}(username: $u, password: $p) { token } }`,
      { u: form.get('username'), p: form.get('password') },
    );
    await signedIn(data[action].token);
  });
});

$('logout').addEventListener('click', () => signOut(''));

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

if (state.token) {
  // A stale token or an unreachable server: back to the sign-in form, saying why.
  attempt(() => signedIn(state.token)).then(() => { if (!state.me) signOut($('error').textContent); });
} else {
  signOut('');
}

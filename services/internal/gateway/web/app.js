// Palaver's web UI: sign in, rooms, live messages, send with acks, scroll-back
// and recovery after a disconnect. Plain DOM; every piece of user text goes
// through textContent (never innerHTML), so it is shown, never run.
//
// How it is laid out, so a new panel (a search box, a people list) plugs in:
// - app holds the state; rooms maps a room name to its state (newRoom).
// - Every room the user may join is joined on one connection, so unread
//   counts hold for rooms not opened yet; messages go into their room's
//   state at once, and reach the page only through the render loop.
// - The render loop (invalidate, render) redraws what changed at most once
//   an animation frame, in batches: a busy room (1,000 messages a second)
//   never blocks the page. Each part of the page has one render function;
//   invalidate('part') asks for it.
// - A room keeps at most MAX_KEPT messages; older ones are fetched again
//   from the history API when the reader scrolls up.

import {
  Connection, DisconnectedError, ProtocolError, devLogin, history as fetchHistory, listRooms, newMessageId,
  page as fetchPage, search as fetchSearch,
} from './protocol.js';

const SESSION_KEY = 'palaver.session'; // localStorage: every tab of this origin, until the token expires
const READ_KEY = 'palaver.read'; // localStorage: per user, the time of the last message read in each room
const JOIN_LAST = 50;
const PAGE = 50;
const SEND_RETRIES = 3;
const MAX_KEPT = 500; // messages kept per room; older ones are fetched again on scroll
const MAX_JOINED = 100; // the gateway's rooms per connection (max_rooms)
const ROOMS_EVERY_MS = 15000; // how often the room list is read again
const GROUP_WITHIN_MS = 5 * 60 * 1000; // one sender's messages within this are grouped

const $ = (id) => document.getElementById(id);

/** h builds an element; string children become text nodes, never markup. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const STATE_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

const app = {
  session: null, // {token, name, dev}
  conn: null,
  me: null, // {id, name} from welcome
  limits: { max_text_bytes: 4096 },
  rooms: new Map(), // name -> room state
  order: [], // room names as listed
  active: '',
  relogin: 0, // time of the last automatic dev re-login
  read: {}, // room -> time (ms) of the last message read, from localStorage
  roomsTimer: 0,
  atBottom: true, // the open room's log is scrolled to its newest message
};

function newRoom(info) {
  return {
    info,
    msgs: [], // sorted by (time, partition, offset); at most MAX_KEPT
    seen: new Set(), // "partition:offset" of msgs
    outbox: new Map(), // client id -> {id, text, state, error, tries}
    before: '', // cursor for the next scroll-back page
    generation: 0, // counts resets: a scroll-back page of an earlier one is dropped
    hasMore: null, // is there anything older than msgs? null: not known yet
    dropped: 0, // trimmed from the start since the page last showed msgs
    rendered: false, // msgs changed since the page last showed them (active room)
    appended: 0, // of which this many were appended at the end, in order
    loadingOlder: false,
    olderUnavailable: false,
    joined: false,
    error: '',
    unread: 0,
    presence: null, // Map of user id -> name, once a snapshot came
    online: 0, // users online (the server's count)
    typing: [], // users typing, [{id, name}]
  };
}

// ---------- session ----------

/** tokenExpiry is the token's exp claim in ms, or 0 when it cannot be read. */
function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/** The sign-in every tab shares, until its token expires. */
function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    if (s && typeof s.token === 'string' && s.token) {
      const exp = tokenExpiry(s.token);
      if (!exp || exp > Date.now()) return s;
      // Expired: a dev sign-in logs in again under its name; others sign in anew.
      if (s.dev && s.name) return { ...s, token: '', expired: true };
    }
  } catch {
    // a broken entry is as good as none
  }
  localStorage.removeItem(SESSION_KEY);
  return null;
}

function saveSession(s) {
  app.session = s;
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
}

function readKey() {
  return `${READ_KEY}.${(app.me && app.me.id) || (app.session && app.session.name) || ''}`;
}

function loadRead() {
  try {
    const r = JSON.parse(localStorage.getItem(readKey()) || '{}');
    app.read = r && typeof r === 'object' ? r : {};
  } catch {
    app.read = {};
  }
}

/** markRead records that the room was read up to its newest message. */
function markRead(name) {
  const room = app.rooms.get(name);
  if (!room) return;
  const newest = room.msgs.length ? room.msgs[room.msgs.length - 1].t : Date.now();
  const was = app.read[name] || 0;
  if (room.unread > 0) invalidate('rooms');
  room.unread = 0;
  if (newest > was) {
    app.read[name] = newest;
    saveRead();
  }
}

/** saveRead stores what was read, at most once a second (a busy room reads on every frame). */
let readTimer = 0;
function saveRead() {
  if (readTimer) return;
  readTimer = setTimeout(() => {
    readTimer = 0;
    localStorage.setItem(readKey(), JSON.stringify(app.read));
  }, 1000);
}

function showSignIn(message = '') {
  $('chat').hidden = true;
  $('account').hidden = true;
  $('sign-in').hidden = false;
  $('conn-state').hidden = true;
  $('sign-in-error').textContent = message;
  setConnState('offline');
  $('dev-login-name').focus();
}

async function signInDev(name) {
  name = name.trim();
  if (!name) {
    $('sign-in-error').textContent = 'Type a name to sign in.';
    $('dev-login-name').focus();
    return;
  }
  $('sign-in-error').textContent = '';
  try {
    const { token } = await devLogin(name);
    saveSession({ token, name, dev: true });
  } catch (err) {
    if (err instanceof ProtocolError && err.code === 'not_found') {
      $('sign-in-error').textContent = 'This server has no dev login. Sign in with a token instead.';
      $('token-login').open = true;
      $('token-input').focus();
    } else {
      $('sign-in-error').textContent = `Could not sign in: ${err.message}`;
    }
    return;
  }
  await startChat();
}

async function signInToken(token) {
  token = token.trim();
  if (!token) {
    $('sign-in-error').textContent = 'Paste a token to sign in.';
    return;
  }
  saveSession({ token, name: '', dev: false });
  await startChat();
}

function signOut(message = '') {
  if (app.conn) app.conn.stop();
  app.conn = null;
  clearInterval(app.roomsTimer);
  app.rooms.clear();
  app.order = [];
  app.active = '';
  app.me = null;
  saveSession(null);
  $('room-list').replaceChildren();
  $('messages').replaceChildren();
  $('outbox').replaceChildren();
  history.replaceState(null, '', location.pathname + location.search);
  document.title = 'Palaver';
  showSignIn(message);
}

// ---------- chat ----------

async function startChat() {
  $('sign-in').hidden = true;
  $('chat').hidden = false;
  $('account').hidden = false;
  $('conn-state').hidden = false;
  $('account-name').textContent = app.session.name || 'you';
  $('rooms-error').textContent = '';
  setConnState('connecting');
  if (app.session.expired && !(await renewToken())) {
    signOut('Your sign-in expired. Sign in again.');
    return;
  }
  loadRead();

  let rooms;
  try {
    rooms = await listRooms(app.session.token);
  } catch (err) {
    if (err.code === 'unauthorized') {
      if (await renewToken()) return startChat();
      signOut('Your sign-in is no longer valid. Sign in again.');
    } else {
      $('rooms-error').textContent = `Could not list the rooms: ${err.message}`;
    }
    return;
  }
  app.rooms.clear();
  app.order = [];
  connect();
  addRooms(rooms);
  const wanted = roomFromHash();
  const first = app.rooms.has(wanted) ? wanted : app.rooms.has('lobby') ? 'lobby' : app.order[0];
  if (first) {
    openRoom(first);
    $('composer-input').focus();
  } else {
    $('rooms-error').textContent = 'There is no room you may join.';
  }
  clearInterval(app.roomsTimer);
  app.roomsTimer = setInterval(refreshRooms, ROOMS_EVERY_MS);
}

/** addRooms adds the rooms not known yet, in the order listed, and joins them. */
function addRooms(rooms) {
  let added = false;
  for (const r of rooms) {
    if (!r || typeof r.name !== 'string' || app.rooms.has(r.name)) continue;
    app.rooms.set(r.name, newRoom(r));
    app.order.push(r.name);
    added = true;
    if (app.conn && app.conn.rooms.size < MAX_JOINED) app.conn.join(r.name, JOIN_LAST).catch(() => {});
  }
  if (added) invalidate('rooms');
}

/** refreshRooms reads the room list again: a new room appears without a reload. */
async function refreshRooms() {
  if (!app.session || !app.session.token) return;
  try {
    addRooms(await listRooms(app.session.token));
  } catch {
    // the next round tries again; the connection state says what is wrong
  }
}

function connect() {
  const conn = new Connection({ token: app.session.token });
  app.conn = conn;
  conn.addEventListener('state', (e) => setConnState(e.detail.state, e.detail.reason));
  conn.addEventListener('welcome', (e) => {
    app.me = e.detail.user || null;
    if (e.detail.limits) app.limits = e.detail.limits;
    if (app.me && app.me.name) $('account-name').textContent = app.me.name;
  });
  conn.addEventListener('joined', (e) => onJoined(e.detail));
  conn.addEventListener('joinerror', (e) => onJoinError(e.detail));
  conn.addEventListener('message', (e) => onMessage(e.detail));
  conn.addEventListener('presence', (e) => onPresence(e.detail));
  conn.addEventListener('ready', () => flushOutboxes());
  conn.addEventListener('unauthorized', async () => {
    if (await renewToken()) conn.reconnect();
    else signOut('Your sign-in expired. Sign in again.');
  });
  conn.addEventListener('fatal', (e) => {
    $('room-error').textContent = e.detail.error.message;
  });
  conn.start();
}

/** A dev-login session gets a fresh token by itself (at most once a minute). */
async function renewToken() {
  const s = app.session;
  if (!s || !s.dev || !s.name || Date.now() - app.relogin < 60000) return false;
  app.relogin = Date.now();
  try {
    const { token } = await devLogin(s.name);
    saveSession({ ...s, token });
    if (app.conn) app.conn.setToken(token);
    return true;
  } catch {
    return false;
  }
}

function setConnState(state, reason = '') {
  const el = $('conn-state');
  el.dataset.state = state;
  el.textContent = STATE_TEXT[state] || state;
  el.title = reason;
  const composerOn = !!app.active && !!app.session;
  $('composer-input').disabled = !composerOn;
  $('composer-send').disabled = !composerOn;
}

function roomFromHash() {
  const m = /^#\/room\/([^/]+)$/.exec(location.hash);
  if (!m) return '';
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return '';
  }
}

function openRoom(name) {
  const room = app.rooms.get(name);
  if (!room) return;
  app.active = name;
  if (roomFromHash() !== name) history.replaceState(null, '', `#/room/${encodeURIComponent(name)}`);
  $('room-title').textContent = room.info.display_name || room.info.name;
  $('room-description').textContent = room.info.description || '';
  $('composer-label').textContent = `Message ${room.info.display_name || room.info.name}`;
  $('room-error').textContent = room.error;
  $('room-tools').hidden = false;
  closeFinder();
  quietLog();
  renderAllMessages(room);
  lastScrollTop = 0;
  renderOutbox();
  renderPresence();
  setConnState($('conn-state').dataset.state);
  scrollToBottom();
  markRead(name);
  invalidate('rooms'); // which room is current, and the title
  if (!app.conn.rooms.has(name)) app.conn.join(name, JOIN_LAST).catch(() => {}); // errors arrive as joinerror
  checkOlder(name);
  renderOlder();
}

function onJoined({ room: name, cursor, reset, first }) {
  const room = app.rooms.get(name);
  if (!room) return;
  room.joined = true;
  room.error = '';
  if (reset) {
    // The room's topic was created again (or the broker wiped): what is
    // shown belongs to history that was cut, and positions start over.
    room.generation++;
    room.msgs = [];
    room.seen.clear();
    room.before = cursor || '';
    room.hasMore = null;
    room.loadingOlder = false;
    room.unread = 0;
    room.appended = 0;
    room.dropped = 0;
    room.rendered = true;
    invalidate('rooms');
    if (name === app.active) {
      $('messages').replaceChildren();
      lastScrollTop = 0;
    }
  } else if (first && cursor && !room.before) {
    room.before = cursor;
  }
  if (name === app.active) {
    $('room-error').textContent = '';
    checkOlder(name);
    renderOlder();
  }
}

/** checkOlder finds out whether the room has messages older than those shown. */
async function checkOlder(name) {
  const room = app.rooms.get(name);
  if (!room || room.hasMore !== null || !room.before || room.checkingOlder) return;
  room.checkingOlder = true;
  const generation = room.generation;
  try {
    const page = await fetchHistory(app.session.token, name, room.before, 1);
    if (room.hasMore === null && generation === room.generation) room.hasMore = page.messages.length > 0;
  } catch (err) {
    if (err.code === 'not_found' || err.status === 501) room.olderUnavailable = true;
  } finally {
    room.checkingOlder = false;
  }
  if (name === app.active) renderOlder();
}

function onJoinError({ room: name, error, retrying }) {
  const room = app.rooms.get(name);
  if (!room) return;
  const text = {
    not_found: 'This room does not exist (any more).',
    forbidden: 'You are not allowed in this room.',
  }[error.code] || `Could not join: ${error.message}${retrying ? ' (retrying)' : ''}`;
  room.error = text;
  if (name === app.active) $('room-error').textContent = text;
}

// onPresence applies a presence snapshot or change (docs/protocol.md).
function onPresence(p) {
  const room = app.rooms.get(p.room);
  if (!room) return;
  const list = (v) => (Array.isArray(v) ? v.filter((u) => u && typeof u.id === 'string') : []);
  if (p.op === 'presence') {
    room.presence = new Map(list(p.users).map((u) => [u.id, u.name || u.id]));
    room.typing = list(p.typing);
  } else {
    if (!room.presence) room.presence = new Map();
    for (const u of list(p.left)) room.presence.delete(u.id);
    for (const u of list(p.joined)) room.presence.set(u.id, u.name || u.id);
    if (Array.isArray(p.typing)) room.typing = list(p.typing);
  }
  if (typeof p.count === 'number') room.online = p.count;
  if (p.room === app.active) renderPresence();
}

// Typing: tell the room at most every 2 seconds while the user types.
let lastTyping = 0;
function userTyped() {
  const room = app.rooms.get(app.active);
  const now = Date.now();
  if (!room || !room.joined || !app.conn || now - lastTyping < 2000 || !$('composer-input').value.trim()) return;
  lastTyping = now;
  app.conn.typing(app.active).catch(() => {});
}

function key(m) {
  return `${m.partition}:${m.offset}`;
}

function compare(a, b) {
  return (a.t - b.t) || (a.partition - b.partition) || (a.offset - b.offset);
}

/** Adds a stored message to its room once, in order; the render loop shows it. */
function addMessage(m, { live }) {
  const room = app.rooms.get(m.room);
  if (!room || typeof m.partition !== 'number' || typeof m.offset !== 'number') return false;
  const k = key(m);
  if (room.seen.has(k)) return false;
  room.seen.add(k);
  const t = Date.parse(m.time);
  const msg = {
    room: m.room,
    id: String(m.id || ''),
    sender: m.sender && typeof m.sender === 'object' ? m.sender : {},
    text: String(m.text ?? ''),
    time: m.time,
    t: Number.isNaN(t) ? 0 : t,
    partition: m.partition,
    offset: m.offset,
    cursor: typeof m.cursor === 'string' ? m.cursor : '',
  };
  // Usually the newest: search from the end.
  let i = room.msgs.length;
  while (i > 0 && compare(room.msgs[i - 1], msg) > 0) i--;
  room.msgs.splice(i, 0, msg);
  if (i === room.msgs.length - 1 && room.appended >= 0) room.appended++;
  else room.appended = -1; // not at the end: redraw the whole room
  room.rendered = false;

  if (live && !isMine(msg) && msg.t > (app.read[m.room] || 0)) {
    if (m.room === app.active && document.visibilityState === 'visible' && app.atBottom) {
      app.read[m.room] = msg.t; // seen as it arrives; saved with the next markRead
    } else {
      room.unread++;
      invalidate('rooms');
    }
  }
  if (live) trim(room);
  if (m.room === app.active) invalidate('messages');
  return true;
}

/**
 * trim keeps the newest MAX_KEPT messages; scrolling up fetches the rest
 * again. A reader scrolled up in the open room keeps up to four times as
 * many, so what they read stays put.
 */
function trim(room) {
  const reading = room === app.rooms.get(app.active) && !app.atBottom;
  const extra = room.msgs.length - (reading ? 4 * MAX_KEPT : MAX_KEPT);
  if (extra <= 0) return;
  const dropped = room.msgs.splice(0, extra);
  for (const m of dropped) room.seen.delete(key(m));
  const last = dropped[dropped.length - 1];
  if (last.cursor) {
    room.before = last.cursor;
    room.hasMore = true;
  }
  room.dropped += extra;
  room.rendered = false;
}

// ---------- the render loop ----------

const dirty = new Set();
let frame = 0;

/**
 * invalidate asks for a part of the page to be drawn again: at the next
 * animation frame, once however many times it was asked. A hidden tab
 * gets no animation frames; its title still counts what is unread.
 */
function invalidate(part) {
  dirty.add(part);
  if (frame) return;
  frame = document.visibilityState === 'hidden'
    ? setTimeout(render, 250)
    : requestAnimationFrame(render);
}

// The open room's list is redrawn at most this often: a busy room gets
// fewer, bigger batches, and its page keeps its time for the reader.
const MESSAGES_EVERY_MS = 100;
let messagesAt = 0;
let messagesLater = 0;

const renderers = {
  rooms: () => { renderRoomList(); renderTitle(); },
  messages: () => {
    const wait = messagesAt + MESSAGES_EVERY_MS - performance.now();
    if (wait > 0) {
      if (!messagesLater) {
        messagesLater = setTimeout(() => {
          messagesLater = 0;
          invalidate('messages');
        }, wait);
      }
      return;
    }
    messagesAt = performance.now();
    renderMessages();
  },
};

function render() {
  frame = 0;
  renderDay();
  const parts = [...dirty];
  dirty.clear();
  for (const part of parts) renderers[part]();
}

/** renderMessages brings the open room's list up to date, appending when it can. */
function renderMessages() {
  const room = app.rooms.get(app.active);
  if (!room || room.rendered) return;
  const list = $('messages');
  const atBottom = app.atBottom;
  const kept = list.children.length - room.dropped;
  if (room.appended >= 0 && kept >= 0 && kept + room.appended === room.msgs.length) {
    for (let i = 0; i < room.dropped; i++) list.firstElementChild.remove();
    if (room.dropped > 0 && list.firstElementChild) list.firstElementChild.classList.remove('cont');
    const frag = document.createDocumentFragment();
    for (let i = room.msgs.length - room.appended; i < room.msgs.length; i++) {
      frag.append(renderMessage(room.msgs[i], room.msgs[i - 1]));
    }
    list.append(frag);
  } else {
    renderAllMessages(room);
  }
  const mine = room.appended > 0 && isMine(room.msgs[room.msgs.length - 1]);
  if (room.dropped > 0) renderOlder(); // what was let go of can be loaded again
  room.appended = 0;
  room.dropped = 0;
  room.rendered = true;
  if (atBottom || mine) scrollToBottom();
  else $('jump-latest').hidden = false;
  if (app.atBottom && document.visibilityState === 'visible') markRead(app.active);
}

function renderAllMessages(room) {
  const frag = document.createDocumentFragment();
  room.msgs.forEach((m, i) => frag.append(renderMessage(m, room.msgs[i - 1])));
  $('messages').replaceChildren(frag);
  room.appended = 0;
  room.dropped = 0;
  room.rendered = true;
}

/** renderTitle puts the unread count of every room in the tab's title. */
function renderTitle() {
  let unread = 0;
  for (const room of app.rooms.values()) unread += room.unread;
  const room = app.rooms.get(app.active);
  const where = room ? `${room.info.display_name || room.info.name} · Palaver` : 'Palaver';
  const title = unread > 0 ? `(${unread > 999 ? '999+' : unread}) ${where}` : where;
  if (document.title !== title) document.title = title;
}

function isMine(m) {
  return !!app.me && m.sender && m.sender.id === app.me.id;
}

function onMessage(f) {
  const room = app.rooms.get(f.room);
  if (room && isMine(f) && room.outbox.has(f.id)) {
    room.outbox.delete(f.id);
    if (f.room === app.active) renderOutbox();
  }
  if (f.room === app.active) quietLogSettle();
  addMessage(f, { live: true });
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });

/** sameGroup: b follows a from the same sender closely enough to share its header. */
function sameGroup(a, b) {
  return !!a && !!b && a.sender.id === b.sender.id && (a.sender.name || '') === (b.sender.name || '') &&
    b.t - a.t >= 0 && b.t - a.t < GROUP_WITHIN_MS;
}

// The day, to tell today's times from older ones; read once a render.
let today = '';
function renderDay() {
  today = new Date().toDateString();
}

// Formatting a time is dear; a busy room's messages share their minute.
let shownKey = '';
let shownText = '';
function shownTime(when, isToday) {
  const key = `${isToday}:${Math.floor(when.getTime() / 60000)}`;
  if (key !== shownKey) {
    shownKey = key;
    shownText = (isToday ? timeFormat : dateTimeFormat).format(when);
  }
  return shownText;
}

function renderMessage(m, prev) {
  const when = new Date(m.t);
  if (!today) renderDay();
  const isToday = today === when.toDateString();
  const name = m.sender.name || m.sender.id || 'unknown';
  let cls = isMine(m) ? 'msg mine' : 'msg';
  if (sameGroup(prev, m)) cls += ' cont';
  return h('li', { class: cls, dataset: { key: key(m), id: m.id } },
    h('div', { class: 'meta' },
      h('span', { class: 'sender' }, name),
      ' ',
      h('time', { datetime: m.time }, m.t ? shownTime(when, isToday) : '')),
    h('p', { class: 'text' }, ...linkify(m.text)));
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

/**
 * linkify splits text into text nodes and links. Only http and https URLs
 * become links, opened in a new tab without access to this page.
 */
function linkify(text) {
  const out = [];
  let at = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0];
    const count = (c) => url.split(c).length - 1;
    while (/[.,;:!?'"\]}]$/.test(url) || (url.endsWith(')') && count('(') < count(')'))) url = url.slice(0, -1);
    let href;
    try {
      const u = new URL(url);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') continue;
      href = u.href;
    } catch {
      continue;
    }
    if (match.index > at) out.push(text.slice(at, match.index));
    out.push(h('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow' }, url));
    at = match.index + url.length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

// ---------- sending ----------

function byteLength(s) {
  return new TextEncoder().encode(s).length;
}

function submitComposer() {
  const input = $('composer-input');
  const text = input.value;
  if (!app.active || !text.trim()) return;
  const max = app.limits.max_text_bytes || 4096;
  const n = byteLength(text);
  if (n > max) {
    $('room-error').textContent = `This message is too long (${n} bytes; the limit is ${max}).`;
    return;
  }
  $('room-error').textContent = '';
  input.value = '';
  autoGrow(input);
  const room = app.rooms.get(app.active);
  const item = { id: newMessageId(), room: app.active, text, state: 'sending', error: '', tries: 0 };
  room.outbox.set(item.id, item);
  renderOutbox();
  scrollToBottom();
  trySend(item);
}

async function trySend(item) {
  const room = app.rooms.get(item.room);
  if (!room || !room.outbox.has(item.id)) return;
  item.state = 'sending';
  item.error = '';
  if (item.room === app.active) renderOutbox();
  let ack;
  try {
    ack = await app.conn.send(item.room, item.id, item.text);
  } catch (err) {
    if (!room.outbox.has(item.id)) return;
    if (err instanceof DisconnectedError) {
      item.state = 'queued'; // sent again, same id, once reconnected
    } else if (err instanceof ProtocolError && ['unavailable', 'rate_limited'].includes(err.code) && item.tries < SEND_RETRIES) {
      item.tries++;
      item.state = 'queued';
      setTimeout(() => trySend(item), 1000 * 2 ** (item.tries - 1));
    } else {
      item.state = 'failed';
      item.error = sendErrorText(err);
    }
    if (item.room === app.active) renderOutbox();
    return;
  }
  room.outbox.delete(item.id);
  addMessage({
    room: item.room, id: item.id, sender: app.me || {}, text: item.text,
    time: ack.time, partition: ack.partition, offset: ack.offset,
  }, { live: true });
  if (item.room === app.active) renderOutbox();
}

function sendErrorText(err) {
  return {
    too_large: 'Too long to send.',
    invalid_utf8: 'The text is not valid UTF-8.',
    rate_limited: 'Too many messages; wait a moment and retry.',
    unavailable: 'The server could not store it in time; it may or may not have been stored. Retrying is safe.',
    not_joined: 'Not in this room yet.',
    forbidden: 'You may not write in this room.',
  }[err.code] || `Not sent: ${err.message}`;
}

function flushOutboxes() {
  for (const room of app.rooms.values()) {
    for (const item of room.outbox.values()) {
      if (item.state !== 'failed') trySend(item);
    }
  }
}

function renderOutbox() {
  const room = app.rooms.get(app.active);
  const items = room ? [...room.outbox.values()] : [];
  $('outbox').replaceChildren(...items.map((item) => {
    const status = {
      sending: 'Sending…',
      queued: 'Waiting for the connection…',
      failed: item.error,
    }[item.state];
    const children = [
      h('div', { class: 'meta' },
        h('span', { class: 'sender' }, (app.me && app.me.name) || app.session?.name || 'you'),
        ' ',
        h('span', { class: 'status', role: item.state === 'failed' ? 'alert' : null }, status)),
      h('p', { class: 'text' }, item.text),
    ];
    if (item.state === 'failed') {
      children.push(h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'link-button', onclick: () => trySend(item) }, 'Retry'),
        h('button', {
          type: 'button', class: 'link-button',
          onclick: () => { room.outbox.delete(item.id); renderOutbox(); },
        }, 'Discard')));
    }
    return h('li', { class: `msg mine pending ${item.state}`, dataset: { id: item.id } }, ...children);
  }));
}

// ---------- scroll-back ----------

function renderOlder() {
  const room = app.rooms.get(app.active);
  const btn = $('load-older');
  const note = $('older-state');
  if (!room) {
    btn.hidden = true;
    note.textContent = '';
    return;
  }
  // The button stays put while loading (hiding a focused button would drop
  // keyboard focus); it goes only when there is nothing more to load.
  const show = !!(room.hasMore === true && room.before && !room.olderUnavailable);
  if (!show && !btn.hidden && document.activeElement === btn) $('log-scroll').focus();
  btn.hidden = !show;
  btn.setAttribute('aria-disabled', room.loadingOlder ? 'true' : 'false');
  if (room.loadingOlder) note.textContent = 'Loading older messages…';
  else if (room.olderUnavailable) note.textContent = 'Older messages are not available.';
  else if (room.hasMore === false) note.textContent = 'This is the beginning of the room.';
  else note.textContent = '';
}

async function loadOlder() {
  const name = app.active;
  const room = app.rooms.get(name);
  if (!room || room.loadingOlder || !room.hasMore || !room.before || room.olderUnavailable) return;
  room.loadingOlder = true;
  renderOlder();
  const scroller = $('log-scroll');
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  let page;
  const generation = room.generation;
  try {
    page = await fetchHistory(app.session.token, name, room.before, PAGE);
  } catch (err) {
    if (generation !== room.generation) return; // reset meanwhile
    room.loadingOlder = false;
    if (err.code === 'unauthorized' && await renewToken()) {
      renderOlder();
      return;
    }
    if (err.code === 'not_found' || err.status === 501) room.olderUnavailable = true;
    else $('room-error').textContent = `Could not load older messages: ${err.message}`;
    renderOlder();
    return;
  }
  if (generation !== room.generation) return; // reset meanwhile: the page is of the old history
  room.loadingOlder = false;
  if (app.active === name) $('message-log').setAttribute('aria-busy', 'true');
  let added = 0;
  for (const m of page.messages) {
    if (m && typeof m === 'object' && addMessage({ ...m, room: name }, { live: false })) added++;
  }
  if (page.messages.length === 0 || !page.before || page.before === room.before) room.hasMore = false;
  room.before = page.before;
  if (app.active === name) {
    renderMessages();
    scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep what was on screen in place
    lastScrollTop = scroller.scrollTop;
    $('message-log').setAttribute('aria-busy', 'false');
    renderOlder();
    if (added === 0 && room.hasMore) loadOlder(); // a page of duplicates: go on
  }
}

// ---------- search and jump to a date ----------

// The finder shows search results or the messages around a date above the
// conversation, which stays live underneath. Text is shown through
// textContent only; matched words are <mark> elements built here.
const finder = {
  room: '',
  mode: '', // 'search' or 'date'
  query: '',
  next: '', // search: the next page's token
  before: '', // date: the cursors of the pages around
  after: '',
  target: 0, // date: the time jumped to (ms)
  busy: false,
};

function closeFinder() {
  $('finder').hidden = true;
  $('finder-list').replaceChildren();
  finder.mode = '';
}

function openFinder(mode, title) {
  Object.assign(finder, { room: app.active, mode, next: '', before: '', after: '' });
  $('finder-title').textContent = title;
  for (const id of ['finder-more', 'finder-earlier', 'finder-later']) $(id).hidden = true;
  $('finder-list').replaceChildren();
  $('finder-state').textContent = '';
  $('finder').hidden = false;
}

function finderItem(m, { marked, target }) {
  const when = new Date(Date.parse(m.time));
  const name = (m.sender && (m.sender.name || m.sender.id)) || 'unknown';
  const text = Array.isArray(m.highlight) && marked
    ? m.highlight.map((seg) => (seg && seg.mark ? h('mark', {}, String(seg.text ?? '')) : String((seg && seg.text) ?? '')))
    : [String(m.text ?? '')];
  return h('li', { class: target ? 'msg target' : 'msg', dataset: { key: key(m) } },
    h('div', { class: 'meta' },
      h('span', { class: 'sender' }, name),
      ' ',
      h('time', { datetime: m.time }, Number.isNaN(when.getTime()) ? '' : dateTimeFormat.format(when)),
      marked ? [' ', h('button', { type: 'button', class: 'link-button', onclick: () => jumpTo(m.time) }, 'Show in context')] : null),
    h('p', { class: 'text' }, ...text));
}

function finderFailed(err) {
  if (err.code === 'unavailable') $('finder-state').textContent = 'Search and jumping to a date need the history service, which is not available now.';
  else $('finder-state').textContent = `Could not load: ${err.message}`;
}

async function runSearch(more) {
  const q = $('search-input').value.trim();
  if (!more) {
    if (!q) return;
    openFinder('search', `Messages matching “${q}”`);
    finder.query = q;
  }
  if (finder.busy) return;
  const name = finder.room;
  finder.busy = true;
  $('finder-state').textContent = 'Searching…';
  try {
    const res = await fetchSearch(app.session.token, name, finder.query, finder.next);
    if (finder.room !== name || finder.mode !== 'search') return;
    $('finder-list').append(...res.results.filter((m) => m && typeof m === 'object').map((m) => finderItem(m, { marked: true })));
    finder.next = res.next;
    const count = $('finder-list').children.length;
    $('finder-state').textContent = count === 0 ? 'No messages match.' : `${count} ${count === 1 ? 'message' : 'messages'}${res.next ? ' so far' : ''}.`;
  } catch (err) {
    if (err.code === 'unauthorized' && await renewToken()) return;
    finderFailed(err);
  } finally {
    finder.busy = false;
    $('finder-more').hidden = finder.mode !== 'search' || !finder.next;
  }
}

async function jumpTo(time) {
  const t = new Date(time);
  if (Number.isNaN(t.getTime())) {
    $('room-error').textContent = 'Choose a date and time to jump to.';
    return;
  }
  openFinder('date', `Around ${dateTimeFormat.format(t)}`);
  finder.target = t.getTime();
  await loadAround({ around: t.toISOString() });
}

async function loadAround(params, where = 'replace') {
  if (finder.busy) return;
  const name = finder.room;
  finder.busy = true;
  $('finder-state').textContent = 'Loading…';
  try {
    const res = await fetchPage(app.session.token, name, params);
    if (finder.room !== name || finder.mode !== 'date') return;
    const items = res.messages.filter((m) => m && typeof m === 'object').map((m) => finderItem(m, { marked: false }));
    if (where === 'replace') {
      // The first message at or after the target is the one to look at.
      const first = res.messages.findIndex((m) => Date.parse(m.time) >= finder.target);
      if (first >= 0) items[first].classList.add('target');
      $('finder-list').replaceChildren(...items);
      finder.before = res.before;
      finder.after = res.after;
      const target = $('finder-list').querySelector('.target');
      if (target) target.scrollIntoView({ block: 'center' });
    } else {
      $('finder-list').append(...items);
      if (res.messages.length > 0) finder.after = res.after;
    }
    $('finder-state').textContent = $('finder-list').children.length === 0 ? 'No messages around that time.' : '';
  } catch (err) {
    if (err.code === 'unauthorized' && await renewToken()) return;
    finderFailed(err);
  } finally {
    finder.busy = false;
    $('finder-earlier').hidden = finder.mode !== 'date' || !finder.before;
    $('finder-later').hidden = finder.mode !== 'date' || !finder.after;
  }
}

async function loadEarlier() {
  if (finder.busy || !finder.before) return;
  const name = finder.room;
  finder.busy = true;
  try {
    const res = await fetchHistory(app.session.token, name, finder.before, PAGE);
    if (finder.room !== name || finder.mode !== 'date') return;
    $('finder-list').prepend(...res.messages.filter((m) => m && typeof m === 'object').map((m) => finderItem(m, { marked: false })));
    finder.before = res.before;
  } catch (err) {
    finderFailed(err);
  } finally {
    finder.busy = false;
    $('finder-earlier').hidden = !finder.before;
  }
}

// ---------- scrolling and live-region hygiene ----------

function nearBottom() {
  const s = $('log-scroll');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

let lastScrollTop = 0;

function scrollToBottom() {
  const s = $('log-scroll');
  s.scrollTop = s.scrollHeight;
  lastScrollTop = s.scrollTop;
  app.atBottom = true;
  $('jump-latest').hidden = true;
}

// While a room fills up (open, recovery), screen readers should not read
// out fifty messages: the log is busy until messages stop arriving.
let quietTimer = 0;
function quietLog() {
  $('message-log').setAttribute('aria-busy', 'true');
  quietLogSettle();
}
function quietLogSettle() {
  if ($('message-log').getAttribute('aria-busy') !== 'true') return;
  clearTimeout(quietTimer);
  quietTimer = setTimeout(() => $('message-log').setAttribute('aria-busy', 'false'), 500);
}

// ---------- rooms and people ----------

function renderRoomList() {
  $('room-list').replaceChildren(...app.order.map((name) => {
    const room = app.rooms.get(name);
    const current = name === app.active;
    return h('li', {},
      h('a', {
        href: `#/room/${encodeURIComponent(name)}`,
        class: 'room-link',
        'aria-current': current ? 'page' : null,
        dataset: { room: name },
        title: room.info.description || null,
      },
      h('span', { class: 'room-name' }, room.info.display_name || name),
      room.unread > 0 ? h('span', { class: 'unread' }, h('span', { class: 'visually-hidden' }, ', unread: '), String(room.unread)) : null));
  }));
  scrollHint();
}

/** scrollHint marks a room list that scrolls sideways (phones) on the side that has more. */
function scrollHint() {
  const list = $('room-list');
  list.classList.toggle('more-right', list.scrollLeft + list.clientWidth < list.scrollWidth - 1);
  list.classList.toggle('more-left', list.scrollLeft > 1);
}

function renderPresence() {
  const room = app.rooms.get(app.active);
  const users = room && room.presence ? [...room.presence].map(([id, name]) => ({ id, name })) : [];
  // You are here once joined, even before presence reports your own join.
  if (room && room.presence && room.joined && app.me && !room.presence.has(app.me.id)) {
    users.push({ id: app.me.id, name: app.me.name || app.me.id });
  }
  users.sort((a, b) => a.name.localeCompare(b.name) || (a.id < b.id ? -1 : 1));
  const me = app.me && app.me.id;
  $('people-list').replaceChildren(...users.map((u) => h('li', { class: u.id === me ? 'me' : null },
    String(u.name || u.id),
    u.id === me ? h('span', { class: 'hint' }, ' (you)') : null)));
  const online = room ? Math.max(room.online, users.length) : 0;
  $('people-count').textContent = online > 0 ? `(${online})` : '';
  $('people-more').textContent = online > users.length ? `and ${online - users.length} more` : '';
  // The panel shows once presence tells who is here.
  const known = !!(room && room.presence);
  $('people').hidden = !known;
  $('chat').classList.toggle('no-people', !known);
  $('people-empty').hidden = users.length > 0;
  const typists = room ? room.typing.filter((u) => u.id !== me).map((u) => String(u.name || u.id)) : [];
  let text = '';
  if (typists.length === 1) text = `${typists[0]} is typing…`;
  else if (typists.length === 2) text = `${typists[0]} and ${typists[1]} are typing…`;
  else if (typists.length > 2) text = 'Several people are typing…';
  $('typing').textContent = text;
}

// ---------- composer ----------

function autoGrow(el) {
  el.style.height = 'auto';
  el.style.height = `${Math.min(el.scrollHeight, 160)}px`;
}

function init() {
  $('dev-login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signInDev($('dev-login-name').value);
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signInToken($('token-input').value);
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    submitComposer();
  });
  const input = $('composer-input');
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submitComposer();
    }
  });
  input.addEventListener('input', () => {
    autoGrow(input);
    userTyped();
  });
  $('load-older').addEventListener('click', () => loadOlder());
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    runSearch(false);
  });
  $('finder-more').addEventListener('click', () => runSearch(true));
  $('jump-form').addEventListener('submit', (e) => {
    e.preventDefault();
    jumpTo($('jump-date').value); // local time, as the control shows it
  });
  $('finder-earlier').addEventListener('click', () => loadEarlier());
  $('finder-later').addEventListener('click', () => loadAround({ after: finder.after }, 'after'));
  $('finder-close').addEventListener('click', () => {
    closeFinder();
    $('composer-input').focus();
  });
  $('jump-latest').addEventListener('click', () => scrollToBottom());
  $('log-scroll').addEventListener('scroll', () => {
    const top = $('log-scroll').scrollTop;
    const upward = top < lastScrollTop;
    lastScrollTop = top;
    app.atBottom = nearBottom();
    if (app.atBottom) {
      $('jump-latest').hidden = true;
      const room = app.rooms.get(app.active);
      if (room && room.unread > 0) markRead(app.active);
    }
    // Only a reader scrolling up loads older pages, not a room being redrawn.
    if (upward && top < 60) loadOlder();
  }, { passive: true });
  window.addEventListener('hashchange', () => {
    const name = roomFromHash();
    if (name && name !== app.active && app.rooms.has(name)) openRoom(name);
  });
  $('room-list').addEventListener('scroll', scrollHint, { passive: true });
  // A message's full date, when the pointer rests on its time.
  $('messages').addEventListener('mouseover', (e) => {
    const t = e.target.closest && e.target.closest('time');
    if (t && !t.title && t.dateTime) t.title = fullFormat.format(new Date(t.dateTime));
  });
  window.addEventListener('resize', scrollHint);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible' || !app.active) return;
    invalidate('messages');
    if (app.atBottom) markRead(app.active);
    refreshRooms();
  });
  // Another tab signed out, or renewed the shared token.
  window.addEventListener('storage', (e) => {
    if (e.key !== SESSION_KEY || !app.session) return;
    const s = loadSession();
    if (!s) signOut();
    else if (s.token && s.token !== app.session.token) {
      app.session = s;
      if (app.conn) app.conn.setToken(s.token);
    }
  });

  app.session = loadSession();
  if (app.session) startChat();
  else showSignIn();
}

init();

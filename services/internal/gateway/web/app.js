// Palaver's web UI: sign in, rooms, live messages, send with acks, scroll-back
// and recovery after a disconnect. Plain DOM; every piece of user text goes
// through textContent (never innerHTML), so it is shown, never run.

import {
  Connection, DisconnectedError, ProtocolError, devLogin, history as fetchHistory, listRooms, newMessageId,
} from './protocol.js';

const SESSION_KEY = 'palaver.session'; // sessionStorage: the tab's sign-in only
const JOIN_LAST = 50;
const PAGE = 50;
const SEND_RETRIES = 3;

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
};

function newRoom(info) {
  return {
    info,
    msgs: [], // sorted by (time, partition, offset)
    seen: new Set(), // "partition:offset"
    outbox: new Map(), // client id -> {id, text, state, error, tries}
    before: '', // cursor for the next scroll-back page
    generation: 0, // counts resets: a scroll-back page of an earlier one is dropped
    hasMore: true,
    loadingOlder: false,
    olderUnavailable: false,
    joined: false,
    error: '',
    unread: 0,
    presence: null,
  };
}

// ---------- session ----------

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    if (s && typeof s.token === 'string' && s.token) return s;
  } catch {
    // a broken entry is as good as none
  }
  return null;
}

function saveSession(s) {
  app.session = s;
  if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(SESSION_KEY);
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
  app.rooms.clear();
  app.order = [];
  app.active = '';
  app.me = null;
  saveSession(null);
  $('room-list').replaceChildren();
  $('messages').replaceChildren();
  $('outbox').replaceChildren();
  history.replaceState(null, '', location.pathname + location.search);
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
  for (const r of rooms) {
    if (!r || typeof r.name !== 'string') continue;
    app.rooms.set(r.name, newRoom(r));
    app.order.push(r.name);
  }
  renderRoomList();
  connect();
  const wanted = roomFromHash();
  const first = app.rooms.has(wanted) ? wanted : app.rooms.has('lobby') ? 'lobby' : app.order[0];
  if (first) {
    openRoom(first);
    $('composer-input').focus();
  } else {
    $('rooms-error').textContent = 'There is no room you may join.';
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
  room.unread = 0;
  if (roomFromHash() !== name) history.replaceState(null, '', `#/room/${encodeURIComponent(name)}`);
  renderRoomList();
  $('room-title').textContent = room.info.display_name || room.info.name;
  $('room-description').textContent = room.info.description || '';
  $('composer-label').textContent = `Message ${room.info.display_name || room.info.name}`;
  $('room-error').textContent = room.error;
  quietLog();
  $('messages').replaceChildren(...room.msgs.map((m) => renderMessage(m)));
  lastScrollTop = 0;
  renderOutbox();
  renderOlder();
  renderPresence();
  setConnState($('conn-state').dataset.state);
  scrollToBottom();
  app.conn.join(name, JOIN_LAST).catch(() => {}); // errors arrive as joinerror
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
    room.hasMore = true;
    room.loadingOlder = false;
    if (name === app.active) {
      $('messages').replaceChildren();
      lastScrollTop = 0;
    }
  } else if (first && cursor && !room.before) {
    room.before = cursor;
  }
  if (name === app.active) {
    $('room-error').textContent = '';
    renderOlder();
  }
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

function onPresence(p) {
  const room = app.rooms.get(p.room);
  if (!room || !Array.isArray(p.users)) return;
  room.presence = p.users;
  if (p.room === app.active) renderPresence();
}

function key(m) {
  return `${m.partition}:${m.offset}`;
}

function compare(a, b) {
  return (a.t - b.t) || (a.partition - b.partition) || (a.offset - b.offset);
}

/** Adds a stored message to its room once, in order; renders it if visible. */
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
  };
  // Usually the newest: search from the end.
  let i = room.msgs.length;
  while (i > 0 && compare(room.msgs[i - 1], msg) > 0) i--;
  room.msgs.splice(i, 0, msg);

  if (m.room !== app.active) {
    if (live && !isMine(msg)) {
      room.unread++;
      renderRoomList();
    }
    return true;
  }
  const list = $('messages');
  const atBottom = nearBottom();
  list.insertBefore(renderMessage(msg), list.children[i] || null);
  if (i === room.msgs.length - 1) {
    if (atBottom || isMine(msg)) scrollToBottom();
    else $('jump-latest').hidden = false;
  }
  return true;
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

function renderMessage(m) {
  const when = new Date(m.t);
  const today = new Date().toDateString() === when.toDateString();
  const name = m.sender.name || m.sender.id || 'unknown';
  return h('li', { class: isMine(m) ? 'msg mine' : 'msg', dataset: { key: key(m), id: m.id } },
    h('div', { class: 'meta' },
      h('span', { class: 'sender' }, name),
      ' ',
      h('time', { datetime: m.time, title: m.t ? fullFormat.format(when) : '' },
        m.t ? (today ? timeFormat : dateTimeFormat).format(when) : '')),
    h('p', { class: 'text' }, m.text));
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
  const show = !!(room.hasMore && room.before && !room.olderUnavailable);
  if (!show && !btn.hidden && document.activeElement === btn) $('log-scroll').focus();
  btn.hidden = !show;
  btn.setAttribute('aria-disabled', room.loadingOlder ? 'true' : 'false');
  if (room.loadingOlder) note.textContent = 'Loading older messages…';
  else if (room.olderUnavailable) note.textContent = 'Older messages are not available.';
  else if (!room.hasMore) note.textContent = 'This is the beginning of the room.';
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
    scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep what was on screen in place
    lastScrollTop = scroller.scrollTop;
    $('message-log').setAttribute('aria-busy', 'false');
    renderOlder();
    if (added === 0 && room.hasMore) loadOlder(); // a page of duplicates: go on
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
}

function renderPresence() {
  const room = app.rooms.get(app.active);
  const users = room && room.presence ? room.presence : [];
  $('people-list').replaceChildren(...users.map((u) => h('li', { class: app.me && u.id === app.me.id ? 'me' : null },
    String((u && (u.name || u.id)) || 'unknown'),
    app.me && u.id === app.me.id ? h('span', { class: 'hint' }, ' (you)') : null)));
  $('people-empty').hidden = users.length > 0;
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
  input.addEventListener('input', () => autoGrow(input));
  $('load-older').addEventListener('click', () => loadOlder());
  $('jump-latest').addEventListener('click', () => scrollToBottom());
  $('log-scroll').addEventListener('scroll', () => {
    const top = $('log-scroll').scrollTop;
    const upward = top < lastScrollTop;
    lastScrollTop = top;
    if (nearBottom()) $('jump-latest').hidden = true;
    // Only a reader scrolling up loads older pages, not a room being redrawn.
    if (upward && top < 60) loadOlder();
  }, { passive: true });
  window.addEventListener('hashchange', () => {
    const name = roomFromHash();
    if (name && name !== app.active && app.rooms.has(name)) openRoom(name);
  });

  app.session = loadSession();
  if (app.session) startChat();
  else showSignIn();
}

init();

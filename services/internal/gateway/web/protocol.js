// The browser side of Palaver's client protocol, version 1 (docs/protocol.md):
// one WebSocket with hello/join/send answered by ref, reconnection with
// exponential backoff, and rejoin of every room with its latest cursor so
// nothing is missed after a disconnect. No framework, no dependencies.

export const PROTOCOL_VERSION = 1;

/** An error the server answered with: `code` is the protocol's stable code. */
export class ProtocolError extends Error {
  constructor(code, message, room) {
    super(message || code);
    this.name = 'ProtocolError';
    this.code = code;
    this.room = room || '';
  }
}

/** The connection ended before the answer came; the command may be retried. */
export class DisconnectedError extends Error {
  constructor(message = 'disconnected') {
    super(message);
    this.name = 'DisconnectedError';
  }
}

async function api(method, path, token, body) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (err) {
    throw new ProtocolError('unavailable', `cannot reach the server (${err.message})`);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const fallback = {
      400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found',
      405: 'not_found', 413: 'too_large', 429: 'rate_limited', 502: 'unavailable',
      503: 'unavailable', 504: 'unavailable',
    }[resp.status] || 'internal';
    const code = (data && typeof data.code === 'string' && data.code) || fallback;
    const message = (data && typeof data.message === 'string' && data.message) || `HTTP ${resp.status}`;
    const err = new ProtocolError(code, message);
    err.status = resp.status;
    throw err;
  }
  return data || {};
}

/** POST /v1/dev/login: a short-lived token for name on a dev-mode gateway. */
export async function devLogin(name) {
  const data = await api('POST', '/v1/dev/login', '', { name });
  if (typeof data.token !== 'string' || !data.token) {
    throw new ProtocolError('internal', 'the answer has no token');
  }
  return data;
}

/** GET /v1/rooms: the rooms the caller may join. */
export async function listRooms(token) {
  const data = await api('GET', '/v1/rooms', token);
  return Array.isArray(data.rooms) ? data.rooms : [];
}

/** GET /v1/rooms/{room}/messages: older messages, oldest first. */
export async function history(token, room, before, limit = 50) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (before) q.set('before', before);
  const data = await api('GET', `/v1/rooms/${encodeURIComponent(room)}/messages?${q}`, token);
  return {
    messages: Array.isArray(data.messages) ? data.messages : [],
    before: typeof data.before === 'string' ? data.before : '',
  };
}

/**
 * GET /v1/rooms/{room}/messages with after= or around=: a page read forward
 * from a cursor, or around an RFC 3339 time; oldest first, with the cursors
 * of the pages before and after it.
 */
export async function page(token, room, { after, around, limit = 50 }) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (around) q.set('around', around);
  else q.set('after', after || '');
  const data = await api('GET', `/v1/rooms/${encodeURIComponent(room)}/messages?${q}`, token);
  return {
    messages: Array.isArray(data.messages) ? data.messages : [],
    before: typeof data.before === 'string' ? data.before : '',
    after: typeof data.after === 'string' ? data.after : '',
  };
}

/**
 * GET /v1/rooms/{room}/search: messages matching every word of q, newest
 * first, each with its highlight segments; next continues (empty at the end).
 */
export async function search(token, room, q, next = '', limit = 20) {
  const params = new URLSearchParams({ q, limit: String(limit) });
  if (next) params.set('next', next);
  const data = await api('GET', `/v1/rooms/${encodeURIComponent(room)}/search?${params}`, token);
  return {
    results: Array.isArray(data.results) ? data.results : [],
    next: typeof data.next === 'string' ? data.next : '',
  };
}

/** A client message id: random, 1 to 64 bytes (no secure context needed). */
export function newMessageId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return 'c-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

const PING_EVERY_MS = 25000;
const ANSWER_TIMEOUT_MS = 15000;
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30000;

/**
 * Connection keeps one WebSocket to the gateway alive and the rooms in
 * `want` joined. It dispatches these events (CustomEvent, data in detail):
 *   state     {state: 'connecting'|'connected'|'reconnecting'|'offline', reason}
 *   welcome   the welcome frame (user, limits)
 *   joined    {room, cursor, recovering, reset, first}: with reset, the
 *             cursor the room was joined with is not a position in the room
 *             as it is now (its topic was created again, or the broker
 *             wiped): what was shown of the room is history that was cut,
 *             and delivery starts again at cursor
 *   joinerror {room, error}
 *   message   a message frame
 *   presence  a presence frame: a snapshot (op presence) or a change (op presence_diff)
 *   ready     after every (re)connect, once the rooms are joined
 *   unauthorized  the token was refused (401 / 4401); call setToken and start
 *   fatal     {error}: giving up (e.g. no common protocol version)
 */
export class Connection extends EventTarget {
  constructor({ token, url } = {}) {
    super();
    this.token = token;
    this.url = url || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
    this.state = 'offline';
    this.welcome = null;
    this.rooms = new Map(); // room -> {cursor, joined, first}
    this.pending = new Map(); // ref -> {resolve, reject, timer}
    this.ws = null;
    this.refSeq = 0;
    this.attempt = 0;
    this.running = false;
    this.retryTimer = 0;
    this.pingTimer = 0;
    this.hadConnection = false;
    this.onOnline = () => {
      if (!this.running) return;
      this.attempt = 0;
      if (!this.ws) this.connectSoon(0, 'back online');
    };
    this.onOffline = () => {
      if (!this.running) return;
      this.drop('the browser went offline', 'offline');
    };
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, reason = '') {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state, reason });
  }

  setToken(token) {
    this.token = token;
  }

  /** Connects again now (after setToken, for instance). */
  reconnect() {
    if (!this.running) return;
    this.attempt = 0;
    if (!this.ws) this.connectSoon(0);
  }

  /** Starts connecting and keeps the connection up until stop. */
  start() {
    if (this.running) return;
    this.running = true;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    this.connectSoon(0);
  }

  /** Closes the connection for good (sign out). */
  stop() {
    this.running = false;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    this.drop('signed out', 'offline');
  }

  /** Cursor of a room: the position after the last message delivered. */
  cursor(room) {
    const r = this.rooms.get(room);
    return r ? r.cursor : '';
  }

  /** Joins room now if connected, and after every reconnect. */
  async join(room, last = 50) {
    let r = this.rooms.get(room);
    if (!r) {
      r = { cursor: '', joined: false, first: true, last };
      this.rooms.set(room, r);
    }
    if (this.state === 'connected' && !r.joined) await this.joinOne(room);
  }

  /** Sends text to room under the client id; resolves with the ack. */
  // typing tells the room's members the user is typing; the server relays
  // at most one every 2 seconds, so callers may call it on every keystroke
  // they like, but need not.
  typing(room) {
    return this.request({ op: 'typing', room });
  }

  send(room, id, text) {
    return this.request({ op: 'send', room, id, text, client_time: new Date().toISOString() });
  }

  connectSoon(delay, reason = '') {
    clearTimeout(this.retryTimer);
    if (!this.running) return;
    if (!navigator.onLine) {
      this.setState('offline', 'the browser is offline');
      return; // the online event starts again
    }
    this.setState(this.hadConnection ? 'reconnecting' : 'connecting', reason);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  connect() {
    if (!this.running || this.ws) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleRetry(`cannot connect: ${err.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.onOpen(ws);
    ws.onmessage = (ev) => this.onFrame(ws, ev.data);
    ws.onclose = (ev) => this.onClose(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // onclose follows and says why
  }

  async onOpen(ws) {
    let welcome;
    try {
      welcome = await this.request({ op: 'hello', versions: [PROTOCOL_VERSION], token: this.token }, ws);
    } catch (err) {
      if (ws !== this.ws) return;
      if (err instanceof ProtocolError && err.code === 'unauthorized') {
        this.unauthorized(err.message);
      } else if (err instanceof ProtocolError && err.code === 'unsupported_version') {
        this.fatal(new Error('This page is out of date for the server: reload it.'));
      }
      return; // the server closes; onClose reconnects
    }
    if (ws !== this.ws) return;
    this.welcome = welcome;
    this.emit('welcome', welcome);
    const joins = [...this.rooms.keys()].map((room) => this.joinOne(room).catch(() => {}));
    await Promise.all(joins);
    if (ws !== this.ws) return;
    this.attempt = 0;
    this.hadConnection = true;
    this.setState('connected');
    this.schedulePing(ws);
    this.emit('ready');
  }

  async joinOne(room) {
    const r = this.rooms.get(room);
    if (!r) return;
    const frame = { op: 'join', room };
    if (r.cursor) frame.cursor = r.cursor;
    else if (r.first && r.last > 0) frame.last = r.last;
    try {
      const joined = await this.request(frame);
      const first = r.first;
      r.first = false;
      r.joined = true;
      if ((joined.reset || !r.cursor) && joined.cursor) r.cursor = joined.cursor;
      this.emit('joined', { room, cursor: joined.cursor, recovering: !!joined.recovering, reset: !!joined.reset, first });
    } catch (err) {
      if (err instanceof ProtocolError && ['not_found', 'forbidden', 'bad_request'].includes(err.code)) {
        this.rooms.delete(room);
        this.emit('joinerror', { room, error: err });
      } else if (!(err instanceof DisconnectedError)) {
        this.emit('joinerror', { room, error: err, retrying: true });
        this.drop(`join ${room} failed: ${err.message}`, 'retry');
      }
      throw err;
    }
  }

  /**
   * The server ended a membership: a deleted room (not_found, forbidden) is
   * forgotten; after unavailable the room is joined again from its cursor.
   */
  roomEnded(f) {
    const r = this.rooms.get(f.room);
    r.joined = false;
    const error = new ProtocolError(f.code, f.message, f.room);
    if (f.code !== 'unavailable') {
      this.rooms.delete(f.room);
      this.emit('joinerror', { room: f.room, error });
      return;
    }
    this.emit('joinerror', { room: f.room, error, retrying: true });
    const ws = this.ws;
    setTimeout(() => {
      if (ws === this.ws && this.rooms.has(f.room)) this.joinOne(f.room).catch(() => {});
    }, 1000);
  }

  /** Sends a command and resolves with its one answer (or rejects). */
  request(frame, ws = this.ws) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN || (frame.op !== 'hello' && !this.welcome)) {
        reject(new DisconnectedError('not connected'));
        return;
      }
      const ref = frame.op === 'hello' ? 'hello' : `r${++this.refSeq}`;
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new DisconnectedError(`no answer to ${frame.op} in time`));
        if (ws === this.ws) this.drop(`no answer to ${frame.op}`, 'retry');
      }, ANSWER_TIMEOUT_MS);
      this.pending.set(ref, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify({ ...frame, ref }));
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(ref);
        reject(new DisconnectedError(err.message));
      }
    });
  }

  onFrame(ws, data) {
    if (ws !== this.ws || typeof data !== 'string') return;
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.op !== 'string') return;
    switch (f.op) {
      case 'message': {
        const r = this.rooms.get(f.room);
        this.emit('message', f);
        if (r && typeof f.cursor === 'string' && f.cursor) r.cursor = f.cursor;
        return;
      }
      case 'presence':
      case 'presence_diff':
        this.emit('presence', f);
        return;
    }
    if (typeof f.ref !== 'string') {
      // An error without ref names a room the server left for us (deleted,
      // or its missed messages unreadable), or precedes the close.
      if (f.op === 'error' && typeof f.room === 'string' && this.rooms.has(f.room)) this.roomEnded(f);
      return;
    }
    const p = this.pending.get(f.ref);
    if (!p) return;
    this.pending.delete(f.ref);
    clearTimeout(p.timer);
    if (f.op === 'error') p.reject(new ProtocolError(f.code, f.message, f.room));
    else p.resolve(f);
  }

  onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    this.detach();
    if (!this.running) return;
    if (code === 4401) {
      this.unauthorized(reason || 'token refused');
      return;
    }
    if (this.state === 'offline') return;
    const why = {
      1001: 'the server is going away',
      1006: 'the connection was lost',
      4408: 'too slow to keep up',
      4429: 'too many messages',
    }[code] || `closed (${code}${reason ? ' ' + reason : ''})`;
    this.scheduleRetry(why);
  }

  scheduleRetry(reason) {
    const base = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** Math.min(this.attempt, 16));
    const delay = base - Math.random() * base * 0.25;
    this.attempt++;
    this.connectSoon(delay, reason);
  }

  /**
   * Abandons the current socket now (a dead network may take minutes to say
   * so), then retries with backoff ('retry'), goes offline ('offline'), or
   * waits for the caller ('hold').
   */
  drop(reason, then) {
    const ws = this.ws;
    clearTimeout(this.retryTimer);
    if (ws) {
      this.detach();
      try {
        ws.close(1000, then === 'retry' ? 'reconnecting' : 'offline');
      } catch {
        // already closing
      }
    }
    if (then === 'retry' && this.running) this.scheduleRetry(reason);
    else if (then !== 'hold') this.setState('offline', reason);
  }

  detach() {
    const ws = this.ws;
    this.ws = null;
    this.welcome = null;
    clearTimeout(this.pingTimer);
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    for (const r of this.rooms.values()) r.joined = false;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new DisconnectedError());
    }
    this.pending.clear();
  }

  schedulePing(ws) {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(async () => {
      if (ws !== this.ws) return;
      try {
        await this.request({ op: 'ping' });
        this.schedulePing(ws);
      } catch {
        // request's timeout already dropped the connection
      }
    }, PING_EVERY_MS);
  }

  /** The token was refused: wait for setToken and reconnect, or stop. */
  unauthorized(reason) {
    this.drop('the token was refused: ' + reason, 'hold');
    this.emit('unauthorized', { reason });
  }

  fatal(error) {
    this.running = false;
    this.drop(error.message, 'offline');
    this.emit('fatal', { error });
  }
}

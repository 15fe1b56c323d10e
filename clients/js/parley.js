// Parley's JavaScript client: an ES module with no dependencies and no
// build step, for browsers and for Node (give it the `ws` package's
// WebSocket). See README.md and docs/PROTOCOL.md.
//
// A ParleyClient stays connected until close(): it reconnects with
// backoff and jitter, to the next of its URLs, and resumes every room it
// is in from the last entry it saw (join with since and epoch), so each
// room's entries reach its listeners once and in order; a gap the server
// can no longer fill comes as a history with gap set, a log that began
// again as a reset. say() gives a message an id and keeps it until the
// room has it: said offline it waits for the connection, answered
// not_delivered or rate_limited or lost with a connection it is said
// again, and the server drops a repeated id, so it is heard once.
// Requests are paced at the rate the server's welcome allows.

/** Error codes of the protocol (docs/PROTOCOL.md), as `ParleyError.code`. */
export const Codes = Object.freeze({
  BadRequest: 'bad_request', UnknownType: 'unknown_type', Binary: 'binary', BadRoom: 'bad_room',
  NotInRoom: 'not_in_room', TooManyRooms: 'too_many_rooms', RoomLimit: 'room_limit', BadNick: 'bad_nick',
  NickTaken: 'nick_taken', UnknownNick: 'unknown_nick', Empty: 'empty', TooLong: 'too_long', BadText: 'bad_text',
  RateLimited: 'rate_limited', NotDelivered: 'not_delivered', Unavailable: 'unavailable', Forbidden: 'forbidden',
  ReadOnly: 'read_only', Muted: 'muted', BadToken: 'bad_token', NotFound: 'not_found', TooLate: 'too_late',
});

/** Close codes the server closes a client with. */
export const CloseCodes = Object.freeze({
  GoingAway: 1001, PolicyViolation: 1008, TryAgainLater: 1013, Disconnected: 4000, TokenExpired: 4001, Banned: 4003,
});

/** A request the server refused: its error event's code and message. */
export class ParleyError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`parley: ${code}: ${message}`);
    this.name = 'ParleyError';
    /** @type {string} */
    this.code = code;
  }
}

const defaults = { minBackoff: 250, maxBackoff: 10000, refreshBefore: 30000, maxPending: 1000 };

/**
 * @typedef {object} Options
 * @property {string|string[]} url the server's chat endpoint(s): ws://host:port/ws; more than one: a cluster's nodes, tried in turn
 * @property {string} [nick] a guest's nick, kept across reconnections
 * @property {string} [room] the room the server joins on connect (?room=)
 * @property {() => Promise<string>} [token] signs in: called before each connection and before the token in force expires
 * @property {typeof WebSocket} [WebSocket] the WebSocket class (default: globalThis.WebSocket; on Node 20, the `ws` package's)
 * @property {number} [minBackoff] ms before the first reconnection (250); it doubles up to maxBackoff (10000), drawn in its upper half
 * @property {number} [maxBackoff]
 * @property {number} [refreshBefore] ms before expiry a fresh token is asked for (30000, or a third of its life if shorter)
 * @property {number} [maxPending] messages said and not yet stored (1000); past it say() rejects
 */

/**
 * A connection to a Parley server that survives reconnections. Listen with
 * on(type, fn): every server event by its type ('message', 'join',
 * 'history', 'presence', 'dm', 'error'...), and 'welcome' on each
 * connection, 'disconnected' ({code, reason}) when one ends, 'closed' at
 * the end.
 */
export class ParleyClient {
  /** @param {Options} options */
  constructor(options) {
    const o = { ...defaults, ...options };
    const urls = Array.isArray(o.url) ? o.url : [o.url];
    for (const u of urls) {
      let p;
      try { p = new URL(u); } catch { throw new TypeError(`ParleyClient: url ${JSON.stringify(u)}: not a URL`); }
      if (p.protocol !== 'ws:' && p.protocol !== 'wss:') throw new TypeError(`ParleyClient: url ${u}: want ws:// or wss://`);
    }
    for (const k of ['minBackoff', 'maxBackoff', 'refreshBefore', 'maxPending']) {
      if (!(typeof o[k] === 'number' && o[k] > 0)) throw new TypeError(`ParleyClient: ${k} ${o[k]}: want a positive number`);
    }
    if (o.maxBackoff < o.minBackoff) throw new TypeError('ParleyClient: maxBackoff below minBackoff');
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (!this._WS) throw new TypeError('ParleyClient: no WebSocket: pass options.WebSocket (Node 20: the ws package)');
    this._o = o;
    this._urls = urls;
    this._next = 0;
    this._listeners = new Map();
    this._ws = null; // the current connection, once welcomed
    this._nick = o.nick || '';
    this._user = '';
    this._limits = null;
    /** @type {Map<string, {epoch:number,last:number,joining:boolean,resumed:boolean,skipAuto:boolean,skipHistory:boolean}>} */
    this._rooms = new Map();
    this._says = []; // {id, room, text, sent, resolve, reject}
    this._waiters = []; // {id, join, match, resolve, reject}
    this._unwanted = new Set();
    this._seq = 0;
    this._backoff = o.minBackoff;
    this._attempt = 0;
    this._closed = false;
    this._welcomedOnce = false;
    this._out = []; // frames waiting for the pace
    this._tokens = 0;
    this._paceAt = 0;
    this._timers = new Set();
  }

  /** The nick of the last connection. */
  get nick() { return this._nick; }

  /** The signed-in user's id, '' for a guest. */
  get user() { return this._user; }

  /**
   * Listens to events of type; returns a function that stops it.
   * @param {string} type @param {(event: any) => void} fn
   */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type)?.delete(fn);
  }

  _emit(type, ev) {
    for (const fn of [...(this._listeners.get(type) || [])]) {
      try { fn(ev); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }

  /** Connects; resolves at the first welcome (and keeps reconnecting until close()). */
  connect() {
    if (!this._connecting) {
      this._connecting = new Promise((resolve) => { this._onFirstWelcome = resolve; });
      this._dial();
    }
    return this._connecting;
  }

  _later(fn, ms) {
    const t = setTimeout(() => { this._timers.delete(t); fn(); }, ms);
    this._timers.add(t);
    return t;
  }

  async _dial() {
    if (this._closed) return;
    const url = new URL(this._urls[this._next++ % this._urls.length]);
    if (this._nick && !this._o.token) url.searchParams.set('nick', this._nick);
    if (this._o.room) url.searchParams.set('room', this._o.room);
    if (this._o.token) {
      try {
        url.searchParams.set('access_token', await this._o.token());
      } catch (e) {
        this._emit('disconnected', { code: 0, reason: `token: ${e.message}` });
        this._retry();
        return;
      }
      if (this._closed) return;
    }
    let ws;
    try { ws = new this._WS(url.toString()); } catch (e) {
      this._emit('disconnected', { code: 0, reason: String(e.message) });
      this._retry();
      return;
    }
    const conn = { ws, welcomed: false, refresh: null };
    ws.onmessage = (ev) => this._frame(conn, ev.data);
    ws.onclose = (ev) => this._ended(conn, ev.code, ev.reason);
    ws.onerror = () => {}; // onclose follows
  }

  _retry() {
    if (this._closed) return;
    const b = this._backoff;
    this._backoff = Math.min(2 * b, this._o.maxBackoff);
    this._later(() => this._dial(), b / 2 + Math.random() * b / 2);
  }

  _ended(conn, code, reason) {
    if (conn.refresh) clearTimeout(conn.refresh);
    if (this._ws === conn.ws) {
      this._ws = null;
      this._conn = null;
      this._out = [];
      for (const s of this._says) s.sent = false;
      for (const r of this._rooms.values()) Object.assign(r, { joining: false, resumed: false, skipAuto: false, skipHistory: false });
      this._waiters = this._waiters.filter((w) => {
        if (!w.join) w.reject(new Error('parley: connection lost before the answer'));
        return w.join;
      });
    }
    if (this._closed) return;
    this._emit('disconnected', { code, reason: String(reason || '') });
    if (code === CloseCodes.Banned) {
      this._stop(new ParleyError('banned', String(reason || 'banned')));
      return;
    }
    if (conn.welcomed) this._backoff = this._o.minBackoff;
    this._retry();
  }

  _frame(conn, data) {
    if (this._closed) { try { conn.ws.close(1000); } catch { /* closing */ } return; }
    let ev;
    try { ev = JSON.parse(typeof data === 'string' ? data : data.toString()); } catch { return; }
    if (!ev || typeof ev.type !== 'string') return;
    if (ev.type === 'welcome') {
      conn.welcomed = true;
      this._welcome(conn, ev);
    } else if (!this._handle(ev)) {
      return;
    }
    this._emit(ev.type, ev);
  }

  _welcome(conn, w) {
    this._ws = conn.ws;
    this._conn = conn;
    this._nick = w.nick;
    this._user = w.user || '';
    this._limits = w.limits || null;
    this._tokens = Math.max(1, (this._limits?.rate_burst || 20) - 2);
    this._paceAt = Date.now();
    this._unwanted.clear();
    if (!this._rooms.has(w.room)) {
      if (!this._welcomedOnce) this._rooms.set(w.room, this._room());
      else { this._unwanted.add(w.room); this._send({ type: 'leave', room: w.room }); }
    }
    for (const [name, r] of this._rooms) {
      if (r.epoch === 0 && name === w.room) continue; // joined by the server, the first time
      r.skipAuto = name === w.room;
      this._send(this._joinRequest(name, r));
    }
    if (w.expires && this._o.token) this._scheduleRefresh(conn, w.expires);
    if (!this._welcomedOnce) { this._welcomedOnce = true; this._onFirstWelcome?.(); }
  }

  _room() { return { epoch: 0, last: 0, joining: false, resumed: false, skipAuto: false, skipHistory: false }; }

  _joinRequest(name, r, id) {
    const req = { type: 'join', room: name };
    if (id) req.id = id;
    if (r.epoch) { req.since = r.last; req.epoch = r.epoch; }
    return req;
  }

  _scheduleRefresh(conn, expires) {
    if (conn.refresh) clearTimeout(conn.refresh);
    const left = expires - Date.now();
    const before = Math.min(this._o.refreshBefore, left / 3);
    conn.refresh = setTimeout(async () => {
      let token;
      try { token = await this._o.token(); } catch { return; } // the server closes with 4001: the reconnection asks again
      if (this._ws === conn.ws) this._send({ type: 'auth', token });
    }, Math.max(0, left - before));
  }

  _handle(ev) {
    let deliver = true;
    switch (ev.type) {
      case 'message': deliver = this._entry(ev.room, ev.seq, ev.id); break;
      case 'edited': case 'deleted': deliver = this._entry(ev.room, ev.seq, ''); break;
      case 'reactions': { const r = this._rooms.get(ev.room); if (r && ev.seq > r.last) r.last = ev.seq; break; }
      case 'join': deliver = this._joined(ev); break;
      case 'history': deliver = this._history(ev); break;
      case 'leave': if (this._unwanted.delete(ev.room)) return false; break;
      case 'reset': { const r = this._rooms.get(ev.room); if (r) { r.epoch = ev.epoch; r.last = ev.seq; } break; }
      case 'nick': this._nick = ev.nick; break;
      case 'auth': if (this._conn) this._scheduleRefresh(this._conn, ev.expires); break;
      case 'error': return this._failed(ev);
    }
    if (deliver) this._answer(ev);
    return deliver;
  }

  _entry(name, seq, id) {
    const r = this._rooms.get(name);
    if (!r) return true;
    if (seq <= r.last) return false;
    r.last = seq;
    if (id) {
      const i = this._says.findIndex((s) => s.room === name && s.id === id);
      if (i >= 0) { this._says.splice(i, 1)[0].resolve(); this._attempt = 0; }
    }
    return true;
  }

  _joined(j) {
    if (this._unwanted.has(j.room)) return false;
    const r = this._rooms.get(j.room);
    if (!r) return true;
    if (r.skipAuto) { r.skipAuto = false; r.skipHistory = true; return false; }
    if (j.epoch !== r.epoch) { r.epoch = j.epoch; r.last = 0; }
    r.joining = true;
    return true;
  }

  _history(h) {
    if (this._unwanted.has(h.room)) return false;
    const r = this._rooms.get(h.room);
    if (!r) return true;
    if (r.skipHistory) { r.skipHistory = false; return false; }
    if (!r.joining) return true; // asked for (send): as it is
    r.joining = false;
    h.messages = (h.messages || []).filter((m) => this._entry(h.room, m.seq, m.id));
    r.resumed = true;
    this._resend(h.room);
    return true;
  }

  _resend(name) {
    if (!this._ws) return;
    for (const s of this._says) {
      const r = this._rooms.get(s.room);
      if (s.sent || (name && s.room !== name) || (r && !r.resumed)) continue;
      s.sent = true;
      this._send({ type: 'say', id: s.id, room: s.room, text: s.text });
    }
  }

  _failed(e) {
    const req = e.request;
    if (!req || !req.id) return true;
    const i = this._says.findIndex((s) => s.id === req.id && s.room === req.room);
    if (i >= 0) {
      const s = this._says[i];
      if (e.code === Codes.NotDelivered || e.code === Codes.RateLimited) {
        s.sent = false;
        this._retryLater(e.code);
      } else {
        this._says.splice(i, 1);
        s.reject(new ParleyError(e.code, e.message));
      }
      return false;
    }
    const w = this._waiters.findIndex((x) => x.id === req.id);
    if (w >= 0) {
      const [x] = this._waiters.splice(w, 1);
      if (req.type === 'join') this._rooms.delete(req.room);
      x.reject(new ParleyError(e.code, e.message));
      return false;
    }
    return true;
  }

  _retryLater(code) {
    if (this._retryTimer) return;
    let d = Math.min(this._o.minBackoff * 2 ** Math.min(this._attempt, 16), this._o.maxBackoff);
    const rate = this._limits?.rate_per_second;
    if (code === Codes.RateLimited && rate > 0) d = Math.max(d, 1000 / rate);
    this._attempt++;
    this._retryTimer = this._later(() => { this._retryTimer = null; this._resend(''); }, d / 2 + Math.random() * d / 2);
  }

  _answer(ev) {
    this._waiters = this._waiters.filter((w) => {
      if (!w.match(ev)) return true;
      w.resolve(ev);
      return false;
    });
  }

  // Pacing: a token bucket a little under the server's (rate x 0.95,
  // burst - 2), so the client is not refused for its rate.
  _send(req) {
    this._out.push(JSON.stringify(req));
    this._flush();
  }

  _flush() {
    if (this._flushTimer || !this._ws) return;
    if (!(this._limits?.rate_per_second > 0)) { // no rate limit: nothing to pace
      try { while (this._out.length) this._ws.send(this._out.shift()); } catch { /* closing: onclose follows */ }
      return;
    }
    const rate = this._limits.rate_per_second * 0.95;
    const burst = Math.max(1, (this._limits.rate_burst || 20) - 2);
    while (this._out.length) {
      const now = Date.now();
      this._tokens = Math.min(burst, this._tokens + (now - this._paceAt) / 1000 * rate);
      this._paceAt = now;
      if (this._tokens < 1) {
        this._flushTimer = this._later(() => { this._flushTimer = null; this._flush(); }, Math.ceil((1 - this._tokens) / rate * 1000));
        return;
      }
      this._tokens -= 1;
      try { this._ws.send(this._out.shift()); } catch { return; }
    }
  }

  _await(match, join) {
    const w = { id: `c${++this._seq}`, join: !!join, match };
    const p = new Promise((resolve, reject) => { w.resolve = resolve; w.reject = reject; });
    if (this._closed) w.reject(new Error('parley: closed'));
    else this._waiters.push(w);
    return { w, p };
  }

  /**
   * Joins room; resolves with the server's join answer once the client is
   * in it (offline: when it connects). It is joined again, from where it
   * left off, after every reconnection.
   * @param {string} room
   */
  join(room) {
    const { w, p } = this._await((ev) => ev.type === 'join' && ev.room === room, true);
    if (!this._rooms.has(room)) this._rooms.set(room, this._room());
    const r = this._rooms.get(room);
    r.skipAuto = false;
    if (this._ws) this._send(this._joinRequest(room, r, w.id));
    return p;
  }

  /** Leaves room: it is not joined again. Its pending messages are rejected. @param {string} room */
  leave(room) {
    this._rooms.delete(room);
    this._says = this._says.filter((s) => {
      if (s.room === room) s.reject(new Error(`parley: left room ${room}`));
      return s.room !== room;
    });
    if (!this._ws) return Promise.resolve();
    const { w, p } = this._await((ev) => ev.type === 'leave' && ev.room === room);
    this._send({ type: 'leave', id: w.id, room });
    return p;
  }

  /**
   * Says text in room; resolves once the room has it, rejects with a
   * ParleyError if the server refuses it for good (empty, too_long,
   * not_in_room, muted...).
   * @param {string} room @param {string} text
   */
  say(room, text) {
    if (this._closed) return Promise.reject(new Error('parley: closed'));
    if (this._says.length >= this._o.maxPending) return Promise.reject(new Error('parley: too many messages pending'));
    const s = { id: randomID(), room, text, sent: false };
    const p = new Promise((resolve, reject) => { s.resolve = resolve; s.reject = reject; });
    this._says.push(s);
    const r = this._rooms.get(room);
    if (this._ws && (!r || r.resumed)) {
      s.sent = true;
      this._send({ type: 'say', id: s.id, room, text });
    }
    return p;
  }

  /** Sends a direct message to a nick; resolves when the server delivered it. @param {string} to @param {string} text */
  dm(to, text) {
    const { w, p } = this._await((ev) => ev.type === 'dm' && ev.to === to && ev.text === text && ev.from === this._nick);
    if (!this._ws) { this._waiters.pop(); return Promise.reject(new Error('parley: not connected')); }
    this._send({ type: 'dm', id: w.id, to, text });
    return p;
  }

  /** Changes a guest's nick, kept across reconnections. @param {string} nick */
  setNick(nick) {
    const { w, p } = this._await((ev) => ev.type === 'nick' && ev.nick === nick);
    if (!this._ws) { this._waiters.pop(); return Promise.reject(new Error('parley: not connected')); }
    this._send({ type: 'nick', id: w.id, nick });
    return p;
  }

  /**
   * Sends any other request (edit, delete, react, read, typing, history,
   * rooms, search) now; its answer comes as an event. False offline.
   * @param {object} request
   */
  send(request) {
    if (!this._ws) return false;
    this._send(request);
    return true;
  }

  /** Closes the connection (1000) and stops; pending messages are rejected. */
  close() {
    this._stop(null);
    return Promise.resolve();
  }

  _stop(err) {
    if (this._closed) return;
    this._closed = true;
    this.error = err;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    const e = err || new Error('parley: closed');
    for (const s of this._says) s.reject(e);
    for (const w of this._waiters) w.reject(e);
    this._says = [];
    this._waiters = [];
    const ws = this._ws;
    this._ws = null;
    if (ws) { try { ws.close(1000); } catch { /* closing already */ } }
    this._emit('closed', { error: err });
  }
}

function randomID() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

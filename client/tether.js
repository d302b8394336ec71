// tether.js: a dependency-free browser client for tether (README "Heartbeats" and "Upstream loss, reconnect and the delivery guarantee").
//
// TetherClient wraps the browser WebSocket and adds what a page behind
// tether needs:
//
//   - heartbeats: it answers tether's JSON pings ({"type":"ping",...} ->
//     {"type":"pong",...}, extra members echoed), sends its own JSON pings
//     every pingInterval, measures their round trip, and treats the
//     connection as dead when no pong arrived for pongTimeout;
//   - reconnects: exponential backoff with full jitter (attempt n waits a
//     random delay in [0, min(maxDelay, initialDelay * 2^n)]), at most
//     maxAttempts attempts per outage, then status "offline" until the page
//     calls reconnect();
//   - upstream status: tether's TETHER_NOTIFY_CLIENT messages
//     ({"type":"upstream","status":...}) become "upstream" events;
//   - a bounded send queue for messages sent while not open, flushed in
//     order on the next open;
//   - session resume (README "Client session resume"; the wire protocol is
//     in client/README.md): it asks tether for a resumable session, keeps
//     what it sent until tether's tether.ack, acknowledges what it
//     receives, and after a loss that was not its own close() resumes the
//     session with its token and count, re-sending what tether had not
//     received. A refused resume emits a "session" event with the messages
//     tether never confirmed.
//
// Heartbeats and upstream status messages are consumed: the app's
// "message" listeners never see them.
//
// Everything that touches time, randomness or the network is injectable
// (options WebSocket, setTimeout, clearTimeout, random, now), so the logic
// runs under fake timers in Node. The class is single-threaded like every
// browser object: call it from the page's event loop only.

/** Close codes the client uses or interprets (RFC 6455 §7.4, IANA registry). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  ABNORMAL: 1006, // never on the wire: the connection broke without a Close
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012, // tether is draining: reconnect
  TRY_AGAIN_LATER: 1013, // tether's buffer overflowed: reconnect
  BAD_GATEWAY: 1014, // tether gave up on the upstream (or it misbehaved)
  CLIENT_DROP: 3000, // drop(): the client killed its own socket on purpose
  CLIENT_HEARTBEAT_TIMEOUT: 3008, // no pong within pongTimeout (IANA 3008 "Timeout")
});

/** The statuses a TetherClient goes through, in the "status" event and the status property. */
export const Status = Object.freeze({
  IDLE: "idle", // constructed, connect() not called yet
  CONNECTING: "connecting", // a socket is opening
  OPEN: "open",
  RECONNECTING: "reconnecting", // waiting out the backoff delay before the next attempt
  OFFLINE: "offline", // maxAttempts attempts failed; call reconnect()
  CLOSED: "closed", // closed by the app (close()) or by a do-not-retry close code
});

/** The upstream statuses tether sends with TETHER_NOTIFY_CLIENT=true (README "Upstream loss, reconnect and the delivery guarantee"). */
export const UpstreamStatus = Object.freeze({
  RECONNECTING: "reconnecting",
  CONNECTED: "connected",
  UNAVAILABLE: "unavailable",
});

const upstreamStatuses = new Set(Object.values(UpstreamStatus));

/** Largest text message that can be a JSON heartbeat (README "Heartbeats": 4 KiB). */
export const MAX_HEARTBEAT_BYTES = 4096;

/** Default options; see TetherOptions in tether.d.ts for the meaning of each. */
export const defaults = Object.freeze({
  protocols: undefined,
  binaryType: undefined,
  pingInterval: 15000,
  pongTimeout: undefined, // 3 * pingInterval
  initialDelay: 250,
  maxDelay: 10000,
  maxAttempts: 10,
  maxQueue: 1024,
  pingMessage: Object.freeze({ type: "ping" }),
  pongMessage: Object.freeze({ type: "pong" }),
  upstreamType: "upstream",
  shouldReconnect: undefined,
  resume: true,
  resendUnconfirmed: false,
  ackEvery: 32,
  ackDelay: 100,
});

/** Resume messages (README "Client session resume"). */
const SESSION_TYPE = "tether.session";
const ACK_TYPE = "tether.ack";

// A close reason from tether that says it gave up on the upstream.
const gaveUpReason = /unavailable|gave up|give up|exhausted/i;

/**
 * shouldReconnect is the default close-code policy. It reports whether a
 * connection that ended with this Close is worth reconnecting.
 *
 * Not retried: 1000 (the server ended the session on purpose), 1008
 * (policy violation), 4000-4999 (application codes), and 1014 once tether
 * has given up on the upstream (an "unavailable" upstream status came
 * first, or the reason says so). Everything else is retried, notably 1001
 * and 1006 (connection lost), 1011, 1012 (tether restarting), 1013
 * (tether's buffer overflowed) and 1014 for other reasons.
 *
 * @param {{code: number, reason: string, upstreamUnavailable: boolean}} close
 * @returns {boolean}
 */
export function shouldReconnect({ code, reason = "", upstreamUnavailable = false }) {
  if (code === CloseCode.NORMAL || code === CloseCode.POLICY_VIOLATION) return false;
  if (code >= 4000 && code <= 4999) return false;
  if (code === CloseCode.BAD_GATEWAY && (upstreamUnavailable || gaveUpReason.test(reason))) return false;
  return true;
}

/**
 * backoffDelay returns the delay before reconnect attempt n (n = 0, 1, ...):
 * full jitter, a value in [0, min(maxDelay, initialDelay * 2^n)] drawn with
 * random() (which returns a number in [0, 1)).
 */
export function backoffDelay(n, initialDelay, maxDelay, random) {
  const cap = Math.min(maxDelay, initialDelay * 2 ** n);
  return Math.round(random() * cap);
}

/**
 * TetherClient is a WebSocket that keeps itself connected through tether.
 * See tether.d.ts for the full API. Create it, add listeners with on(),
 * then call connect().
 */
export class TetherClient {
  /**
   * @param {string | (() => string)} url the ws:// or wss:// URL of tether,
   *   or a function returning it (called before every attempt)
   * @param {object} [options] see TetherOptions in tether.d.ts
   */
  constructor(url, options = {}) {
    const o = { ...defaults, ...options };
    this._url = url;
    this._protocols = o.protocols;
    this._binaryType = o.binaryType;
    this._pingInterval = o.pingInterval;
    this._pongTimeout = o.pongTimeout ?? 3 * o.pingInterval;
    this._initialDelay = o.initialDelay;
    this._maxDelay = o.maxDelay;
    this._maxAttempts = o.maxAttempts;
    this._maxQueue = o.maxQueue;
    this._pingMessage = { ...o.pingMessage };
    this._pongMessage = { ...o.pongMessage };
    this._upstreamType = o.upstreamType;
    this._shouldReconnect = o.shouldReconnect ?? shouldReconnect;
    this._resume = o.resume !== false;
    this._resendUnconfirmed = !!o.resendUnconfirmed;
    this._ackEvery = o.ackEvery ?? defaults.ackEvery;
    this._ackDelay = o.ackDelay ?? defaults.ackDelay;

    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    this._setTimeout = o.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this._clearTimeout = o.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this._random = o.random ?? Math.random;
    this._now = o.now ?? defaultNow;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("TetherClient: no WebSocket class (pass options.WebSocket)");
    }
    if (typeof this._pingMessage.type !== "string" || typeof this._pongMessage.type !== "string"
      || this._pingMessage.type === this._pongMessage.type) {
      throw new TypeError('TetherClient: pingMessage and pongMessage need distinct string "type" members');
    }

    this._listeners = new Map(); // event type -> Set of listeners
    this._ws = null; // the current socket; events of any other socket are ignored
    this._opened = false; // whether the current socket has opened
    this._status = Status.IDLE;
    this._upstream = null; // last upstream status, or null before any
    this._upstreamUnavailable = false; // tether said "unavailable" on this connection
    this._reconnecting = false; // in an outage: the last connection was lost
    this._retries = 0; // reconnect attempts made in this outage
    this._retryTimer = null;
    this._pingTimer = null;
    this._deadlineTimer = null;
    this._pingSeq = 0;
    this._pending = new Map(); // ping id -> time sent
    this._queue = [];
    this._closedByApp = false;

    // Session resume. _token is null until tether's tether.session
    // message; _recv counts the data messages received in the session;
    // _unconfirmed holds the data messages sent that tether has not
    // acknowledged, the first of them being message number _confirmed.
    this._token = null;
    this._resumable = false; // the current socket's session is resumable
    this._awaitSession = false; // the current socket waits for tether.session
    this._recv = 0;
    this._ackSent = 0;
    this._ackTimer = null;
    this._unconfirmed = [];
    this._confirmed = 0;
    this._stale = null; // a socket given up without a Close (resume closes it)
  }

  /** The current status, one of Status. */
  get status() { return this._status; }
  /** The last upstream status from tether (one of UpstreamStatus), or null. */
  get upstream() { return this._upstream; }
  /** Messages waiting in the send queue. */
  get queued() { return this._queue.length; }
  /** Reconnect attempts made in the current outage (the last one's number), else 0. */
  get attempt() { return this._reconnecting ? this._retries : 0; }
  /** The underlying WebSocket, or null. For inspection only. */
  get socket() { return this._ws; }
  /** Whether the current session is resumable (tether sent its token). */
  get resumable() { return this._resumable; }
  /** Data messages sent that tether has not acknowledged yet. */
  get unconfirmed() { return this._unconfirmed.length; }

  /**
   * on adds a listener for one event type and returns a function that
   * removes it. Types: "status", "upstream", "message", "ping" and "pong"
   * (see tether.d.ts for each detail object).
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  /** off removes a listener added with on(). */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * connect opens the first connection. It does nothing unless the client
   * is idle; use reconnect() afterwards.
   */
  connect() {
    if (this._status !== Status.IDLE || this._closedByApp) return;
    this._dial();
  }

  /**
   * reconnect starts over at once: it resets the attempt counter, closes
   * the current socket if there is one (with CLIENT_DROP) and opens a new
   * one. This is what the page's "reconnect" button calls when the status
   * is "offline" or "closed". It returns false (and does nothing) after
   * close().
   */
  reconnect() {
    if (this._closedByApp) return false;
    this._clearRetry();
    this._abandon(CloseCode.CLIENT_DROP, "reconnect", true);
    this._reconnecting = false;
    this._retries = 0;
    this._dial();
    return true;
  }

  /**
   * send sends data now when the connection is open, or queues it when it
   * is not (connecting, reconnecting, offline, closed by the server): the
   * queue is flushed in order on the next open. It returns true when the
   * data was sent or queued, and false when it was dropped because the
   * queue holds maxQueue messages already or close() was called. It never
   * throws for those cases.
   */
  send(data) {
    if (this._closedByApp) return false;
    if (this._status === Status.OPEN && this._ws) {
      this._sendData(data);
      return true;
    }
    if (this._queue.length >= this._maxQueue) return false;
    this._queue.push(data);
    return true;
  }

  /**
   * close closes the connection with code (default 1000) and reason, drops
   * the queue, and stops for good: the client never reconnects afterwards,
   * and connect(), reconnect() and send() do nothing.
   */
  close(code = CloseCode.NORMAL, reason = "") {
    if (this._closedByApp) return;
    this._closedByApp = true;
    this._clearRetry();
    this._queue.length = 0;
    this._abandon(code, reason);
    this._forgetSession();
    this._setStatus(Status.CLOSED, { code, reason, byClient: true });
  }

  /**
   * drop kills the current socket as if the network had failed: it closes
   * it with code (default 3000, CLIENT_DROP) and then behaves as after an
   * unexpected loss, reconnecting with backoff. For demos and tests.
   */
  drop(code = CloseCode.CLIENT_DROP, reason = "dropped by client") {
    if (!this._ws || this._closedByApp) return false;
    this._abandon(code, reason, true);
    this._lost({ code, reason, wasClean: false, dropped: true });
    return true;
  }

  // ---- internals ----

  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(detail);
      } catch (err) {
        // A broken listener must not break the connection state machine.
        reportError(err);
      }
    }
  }

  _setStatus(status, detail = {}) {
    this._status = status;
    this._emit("status", { status, ...detail });
  }

  _dial() {
    let url = typeof this._url === "function" ? this._url() : this._url;
    if (this._resume) url = withResume(url, this._token, this._recv);
    let ws;
    try {
      ws = this._protocols === undefined
        ? new this._WebSocket(url)
        : new this._WebSocket(url, this._protocols);
    } catch (err) {
      // A malformed URL throws synchronously: retrying cannot help.
      this._setStatus(Status.CLOSED, { code: CloseCode.ABNORMAL, reason: String(err?.message ?? err), byClient: false });
      return;
    }
    if (this._binaryType !== undefined) ws.binaryType = this._binaryType;
    this._ws = ws;
    this._opened = false;
    this._upstreamUnavailable = false;
    this._resumable = false;
    this._awaitSession = this._resume;
    ws.onopen = () => { if (ws === this._ws) this._onOpen(); };
    ws.onmessage = (ev) => { if (ws === this._ws) this._onMessage(ev.data); };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._stopHeartbeat();
      this._lost({ code: ev.code, reason: ev.reason ?? "", wasClean: !!ev.wasClean, dropped: false });
    };
    ws.onerror = () => {}; // a close event always follows
    this._setStatus(Status.CONNECTING, { attempt: this.attempt });
  }

  // _abandon detaches and closes the current socket, if any, without
  // reacting to its end. silent, on a resumable session, leaves it
  // unclosed: a Close would end the session on tether; the resume closes
  // it instead.
  _abandon(code, reason, silent = false) {
    const ws = this._ws;
    this._ws = null;
    this._stopHeartbeat();
    this._stopAck();
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (silent && this._resumable && this._token !== null) {
      this._closeStale();
      this._stale = ws;
      return;
    }
    try {
      ws.close(code, reason);
    } catch {
      // close() throws for codes a browser may not send; the socket is
      // unreferenced either way.
      try { ws.close(); } catch { /* already closed */ }
    }
  }

  _onOpen() {
    this._opened = true;
    // A resumable dial waits for tether.session before it counts as open:
    // a resume re-sends first, and the queue goes after.
    if (this._awaitSession) return;
    this._opened_();
  }

  _opened_() {
    const attempt = this.attempt;
    this._reconnecting = false;
    this._retries = 0;
    this._startHeartbeat();
    if (this._upstream !== UpstreamStatus.CONNECTED) {
      // tether dials the upstream before accepting us, so an open
      // connection means a connected upstream.
      this._upstream = UpstreamStatus.CONNECTED;
      this._emit("upstream", { status: UpstreamStatus.CONNECTED, implicit: true });
    }
    // Flush first, so messages queued while down go before anything the
    // app sends from its "open" listener.
    const queued = this._queue.splice(0);
    for (const data of queued) this._sendData(data);
    this._setStatus(Status.OPEN, { attempt, flushed: queued.length, protocol: this._ws.protocol ?? "" });
  }

  // _lost handles the end of the current socket, whether it had opened
  // (a connection loss: an outage starts) or not (the first dial or a
  // reconnect attempt failed). Reconnect attempt n (n = 0, 1, ...) of an
  // outage waits backoffDelay(n); after maxAttempts failed attempts the
  // client goes offline.
  _lost({ code, reason, wasClean, dropped }) {
    this._opened = false;
    if (this._closedByApp) return;
    const detail = { code, reason, wasClean };
    if (!dropped && !this._shouldReconnect({ code, reason, upstreamUnavailable: this._upstreamUnavailable })) {
      this._reconnecting = false;
      this._retries = 0;
      this._setStatus(Status.CLOSED, { ...detail, byClient: false });
      return;
    }
    if (!this._reconnecting) {
      this._reconnecting = true;
      this._retries = 0;
    }
    if (this._maxAttempts > 0 && this._retries >= this._maxAttempts) {
      this._setStatus(Status.OFFLINE, { ...detail, attempts: this._retries });
      return;
    }
    const n = this._retries;
    const delay = backoffDelay(n, this._initialDelay, this._maxDelay, this._random);
    this._setStatus(Status.RECONNECTING, { ...detail, attempt: n + 1, maxAttempts: this._maxAttempts, delay });
    this._clearRetry();
    this._retryTimer = this._setTimeout(() => {
      this._retryTimer = null;
      this._retries = n + 1;
      this._dial();
    }, delay);
  }

  _clearRetry() {
    if (this._retryTimer !== null) {
      this._clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
  }

  _onMessage(data) {
    const msg = typeof data === "string" ? parseControl(data) : null;
    if (this._awaitSession) {
      this._awaitSession = false;
      if (msg !== null && msg.type === SESSION_TYPE && typeof msg.token === "string") {
        this._onSession(msg);
        return;
      }
      // No tether.session first: resume is off at tether.
      this._forgetSession();
      if (this._opened) this._opened_();
    }
    if (msg !== null) {
      if (msg.type === this._pingMessage.type) return this._onPing(msg);
      if (msg.type === this._pongMessage.type) return this._onPong(msg);
      if (this._resumable && msg.type === ACK_TYPE && Number.isSafeInteger(msg.ack)) return this._onAck(msg.ack);
    }
    if (this._resumable) this._counted();
    if (msg !== null && msg.type === this._upstreamType && upstreamStatuses.has(msg.status)) return this._onUpstream(msg);
    this._emit("message", { data });
  }

  // _onSession handles tether's tether.session message: a new session,
  // a resumed one (re-send what tether lacks), or a refused resume.
  _onSession(msg) {
    this._closeStale();
    const hadSession = this._token !== null;
    this._token = msg.token;
    this._resumable = true;
    let resent = 0;
    let unconfirmed = [];
    if (msg.resumed === true && Number.isSafeInteger(msg.ack) && msg.ack >= this._confirmed
      && msg.ack <= this._confirmed + this._unconfirmed.length) {
      this._confirm(msg.ack);
      this._ackSent = this._recv; // tether has our count from tether_ack
      const again = this._unconfirmed;
      for (const data of again) this._ws.send(data);
      resent = again.length;
    } else {
      unconfirmed = this._unconfirmed;
      this._unconfirmed = [];
      this._confirmed = 0;
      this._recv = 0;
      this._ackSent = 0;
      // Re-sent into the new session only if the app says so, before
      // what it queued meanwhile.
      if (this._resendUnconfirmed) this._queue.unshift(...unconfirmed);
    }
    const resumed = msg.resumed === true && hadSession;
    this._opened_();
    this._emit("session", { resumed, refused: hadSession && !resumed, resent, unconfirmed: [...unconfirmed] });
  }

  _sendData(data) {
    this._ws.send(data);
    if (this._resumable) this._unconfirmed.push(data);
  }

  _onAck(n) {
    if (n >= this._confirmed && n <= this._confirmed + this._unconfirmed.length) this._confirm(n);
  }

  // _confirm drops the messages tether has: those numbered below n.
  _confirm(n) {
    this._unconfirmed.splice(0, n - this._confirmed);
    this._confirmed = n;
  }

  // _counted counts a data message received and acknowledges in time:
  // at once every ackEvery messages, else ackDelay after the first
  // unacknowledged one.
  _counted() {
    this._recv++;
    if (this._recv - this._ackSent >= this._ackEvery) {
      this._sendAck();
    } else if (this._ackTimer === null) {
      this._ackTimer = this._setTimeout(() => {
        this._ackTimer = null;
        this._sendAck();
      }, this._ackDelay);
    }
  }

  _sendAck() {
    this._stopAck();
    if (!this._ws || this._recv === this._ackSent) return;
    this._ackSent = this._recv;
    this._ws.send(JSON.stringify({ type: ACK_TYPE, ack: this._recv }));
  }

  _stopAck() {
    if (this._ackTimer !== null) {
      this._clearTimeout(this._ackTimer);
      this._ackTimer = null;
    }
  }

  _closeStale() {
    const ws = this._stale;
    this._stale = null;
    if (ws) {
      try { ws.close(); } catch { /* already closed */ }
    }
  }

  // _forgetSession drops the resume state: the next connection is a new
  // session.
  _forgetSession() {
    this._closeStale();
    this._token = null;
    this._resumable = false;
    this._recv = this._ackSent = this._confirmed = 0;
    this._unconfirmed = [];
  }

  // _onPing answers one of tether's JSON pings: the configured pong, with
  // every member of the ping other than "type" echoed (README "Heartbeats").
  _onPing(ping) {
    const pong = { ...this._pongMessage, ...ping, type: this._pongMessage.type };
    this._ws.send(JSON.stringify(pong));
    this._emit("ping", { from: "server", message: ping, reply: pong, at: this._now() });
  }

  _onPong(pong) {
    const now = this._now();
    this._armDeadline(); // any pong proves the path alive
    let rtt = null;
    if (this._pending.has(pong.id)) {
      rtt = now - this._pending.get(pong.id);
      this._pending.delete(pong.id);
    }
    this._emit("pong", { from: "server", id: pong.id, rtt, message: pong, at: now });
  }

  _onUpstream(msg) {
    this._upstream = msg.status;
    if (msg.status === UpstreamStatus.UNAVAILABLE) this._upstreamUnavailable = true;
    const detail = { status: msg.status, implicit: false };
    if (msg.attempt !== undefined) detail.attempt = msg.attempt;
    this._emit("upstream", detail);
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    if (!(this._pingInterval > 0)) return;
    this._armDeadline();
    const tick = () => {
      this._pingTimer = this._setTimeout(tick, this._pingInterval);
      this._sendPing();
    };
    this._pingTimer = this._setTimeout(tick, this._pingInterval);
  }

  _stopHeartbeat() {
    if (this._pingTimer !== null) this._clearTimeout(this._pingTimer);
    if (this._deadlineTimer !== null) this._clearTimeout(this._deadlineTimer);
    this._pingTimer = this._deadlineTimer = null;
    this._pending.clear();
  }

  _armDeadline() {
    if (!(this._pongTimeout > 0) || !(this._pingInterval > 0)) return;
    if (this._deadlineTimer !== null) this._clearTimeout(this._deadlineTimer);
    this._deadlineTimer = this._setTimeout(() => {
      this._deadlineTimer = null;
      const reason = "no pong from tether";
      this._abandon(CloseCode.CLIENT_HEARTBEAT_TIMEOUT, reason, true);
      this._lost({ code: CloseCode.CLIENT_HEARTBEAT_TIMEOUT, reason, wasClean: false, dropped: true });
    }, this._pongTimeout);
  }

  _sendPing() {
    if (!this._ws) return;
    const id = ++this._pingSeq;
    const at = this._now();
    this._pending.set(id, at);
    if (this._pending.size > 64) {
      // Pongs that never came: forget the oldest.
      this._pending.delete(this._pending.keys().next().value);
    }
    this._ws.send(JSON.stringify({ ...this._pingMessage, id }));
    this._emit("ping", { from: "client", id, at });
  }
}

// parseControl returns the JSON object in s when s can be a heartbeat or an
// upstream status message (a JSON object of at most 4 KiB with a string
// "type"), and null otherwise. It parses only text that starts with "{".
function parseControl(s) {
  if (s.length > MAX_HEARTBEAT_BYTES) return null;
  let i = 0;
  while (i < s.length && (s[i] === " " || s[i] === "\t" || s[i] === "\n" || s[i] === "\r")) i++;
  if (s[i] !== "{") return null;
  if (s.length * 3 > MAX_HEARTBEAT_BYTES && utf8Length(s) > MAX_HEARTBEAT_BYTES) return null;
  let v;
  try {
    v = JSON.parse(s);
  } catch {
    return null;
  }
  if (v === null || typeof v !== "object" || Array.isArray(v) || typeof v.type !== "string") return null;
  return v;
}

// withResume adds tether's resume parameters to url: a new resumable
// session, or a resume of token after recv messages.
function withResume(url, token, recv) {
  const q = token === null
    ? "tether_resume=new"
    : `tether_resume=${encodeURIComponent(token)}&tether_ack=${recv}`;
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  return base + (base.includes("?") ? "&" : "?") + q;
}

function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

function defaultNow() {
  return globalThis.performance?.now?.() ?? Date.now();
}

function reportError(err) {
  if (typeof globalThis.reportError === "function") {
    globalThis.reportError(err);
  } else {
    queueMicrotask(() => { throw err; });
  }
}

export default TetherClient;

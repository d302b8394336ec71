// Unit tests for tether.js with Node's built-in runner: node --test client/
// A fake WebSocket class and fake timers drive the client deterministically.

import { test } from "node:test";
import assert from "node:assert/strict";

import { TetherClient, CloseCode, Status, backoffDelay, shouldReconnect } from "./tether.js";

// FakeClock is an injectable setTimeout/clearTimeout/now.
class FakeClock {
  constructor() {
    this.time = 0;
    this.seq = 0;
    this.timers = new Map(); // id -> {at, fn}
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.time + Math.max(0, ms), fn });
      return id;
    };
    this.clearTimeout = (id) => { this.timers.delete(id); };
    this.now = () => this.time;
  }

  // advance runs every timer due within ms, in time order.
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at || (t.at === next[1].at && id < next[0]))) next = [id, t];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }

  // delays returns the pending timers' remaining delays.
  delays() {
    return [...this.timers.values()].map((t) => t.at - this.time);
  }
}

// fakeWebSocketClass returns a WebSocket class that records its instances.
function fakeWebSocketClass() {
  const instances = [];
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = FakeWebSocket.CONNECTING;
      this.protocol = "";
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      instances.push(this);
    }
    send(data) {
      if (this.readyState !== FakeWebSocket.OPEN) throw new Error("send on a socket that is not open");
      this.sent.push(data);
    }
    close(code, reason) {
      if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
        throw new Error(`InvalidAccessError: close code ${code}`);
      }
      this.closedWith = { code, reason };
      this.readyState = FakeWebSocket.CLOSING;
    }
    // Server side of the fake.
    serverOpen() {
      this.readyState = FakeWebSocket.OPEN;
      this.onopen?.({});
    }
    serverSend(data) {
      this.onmessage?.({ data: typeof data === "string" ? data : data });
    }
    serverSendJSON(obj) {
      this.serverSend(JSON.stringify(obj));
    }
    serverClose(code, reason = "", wasClean = true) {
      this.readyState = FakeWebSocket.CLOSED;
      this.onerror?.({});
      this.onclose?.({ code, reason, wasClean });
    }
    fail() {
      this.serverClose(1006, "", false);
    }
  }
  return { FakeWebSocket, instances };
}

// setup builds a client over fakes and records its events.
function setup(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, instances } = fakeWebSocketClass();
  const randoms = options.randoms ?? [];
  const client = new TetherClient("ws://tether.test/", {
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => (randoms.length ? randoms.shift() : 1 - Number.EPSILON),
    pingInterval: 1000,
    initialDelay: 100,
    maxDelay: 1000,
    maxAttempts: 5,
    resume: false, // the resume tests below turn it on
    ...options.client,
  });
  const events = { status: [], upstream: [], message: [], ping: [], pong: [], session: [] };
  for (const type of Object.keys(events)) client.on(type, (d) => events[type].push(d));
  const last = () => instances[instances.length - 1];
  const statuses = () => events.status.map((e) => e.status);
  return { clock, client, instances, events, last, statuses };
}

test("connect opens one socket and reports connecting then open", () => {
  const { client, instances, last, statuses } = setup();
  assert.equal(client.status, Status.IDLE);
  client.connect();
  assert.equal(instances.length, 1);
  assert.equal(last().url, "ws://tether.test/");
  assert.deepEqual(statuses(), ["connecting"]);
  last().serverOpen();
  assert.deepEqual(statuses(), ["connecting", "open"]);
  assert.equal(client.status, Status.OPEN);
});

test("backoffDelay is full jitter in [0, min(max, initial*2^n)]", () => {
  for (let n = 0; n < 12; n++) {
    const cap = Math.min(10000, 250 * 2 ** n);
    assert.equal(backoffDelay(n, 250, 10000, () => 0), 0, `n=${n} low`);
    assert.equal(backoffDelay(n, 250, 10000, () => 1 - Number.EPSILON), cap, `n=${n} high`);
    const mid = backoffDelay(n, 250, 10000, () => 0.5);
    assert.ok(mid >= 0 && mid <= cap, `n=${n} mid ${mid}`);
  }
  assert.equal(backoffDelay(1000, 250, 10000, () => 0.5), 5000, "no overflow for large n");
});

test("reconnect delays follow the backoff bounds per attempt, with the injected jitter", () => {
  // random() always at the top of its range: every delay is the cap.
  const { clock, client, instances, last, events } = setup({ client: { maxAttempts: 0, initialDelay: 100, maxDelay: 1000 } });
  client.connect();
  last().serverOpen();
  last().serverClose(1006, "", false);
  const caps = [100, 200, 400, 800, 1000, 1000, 1000];
  for (let n = 0; n < caps.length; n++) {
    const ev = events.status.at(-1);
    assert.equal(ev.status, "reconnecting");
    assert.equal(ev.attempt, n + 1);
    assert.equal(ev.delay, caps[n], `attempt ${n + 1}`);
    const before = instances.length;
    clock.advance(ev.delay - 1);
    assert.equal(instances.length, before, "no dial before the delay");
    clock.advance(1);
    assert.equal(instances.length, before + 1, "dial at the delay");
    assert.equal(client.attempt, n + 1);
    last().fail();
  }
});

test("jitter draws are in [0, cap] for every attempt", () => {
  const draws = [0, 0.5, 0.25, 0.999];
  const { clock, client, last, events } = setup({ randoms: [...draws], client: { initialDelay: 100, maxDelay: 10000, maxAttempts: 0 } });
  client.connect();
  last().serverOpen();
  last().serverClose(1006, "", false);
  const got = [];
  for (let n = 0; n < draws.length; n++) {
    const ev = events.status.at(-1);
    got.push(ev.delay);
    clock.advance(ev.delay);
    last().fail();
  }
  assert.deepEqual(got, [0, 100, 100, 799]);
});

test("maxAttempts failed attempts make the client offline; no more dials", () => {
  const { clock, client, instances, last, events, statuses } = setup({ client: { maxAttempts: 3 } });
  client.connect();
  last().serverOpen();
  last().serverClose(1006, "", false);
  for (let i = 0; i < 3; i++) {
    clock.advance(10000);
    last().fail();
  }
  assert.equal(instances.length, 4, "the first socket plus exactly maxAttempts dials");
  assert.equal(client.status, Status.OFFLINE);
  assert.equal(events.status.at(-1).attempts, 3);
  clock.advance(1e9);
  assert.equal(instances.length, 4, "offline: no more dials");
  assert.deepEqual(clock.delays(), [], "no timers left");
  assert.deepEqual(statuses().filter((s) => s === "reconnecting").length, 3);
});

test("a failing first connect also gives up after maxAttempts", () => {
  const { clock, client, instances, last } = setup({ client: { maxAttempts: 2 } });
  client.connect();
  last().fail();
  clock.advance(10000);
  last().fail();
  clock.advance(10000);
  last().fail();
  assert.equal(instances.length, 3);
  assert.equal(client.status, Status.OFFLINE);
});

test("reconnect() from offline dials at once and resets the attempt counter", () => {
  const { clock, client, instances, last, events } = setup({ client: { maxAttempts: 2 } });
  client.connect();
  last().serverOpen();
  last().fail();
  clock.advance(10000);
  last().fail();
  clock.advance(10000);
  last().fail();
  assert.equal(client.status, Status.OFFLINE);
  const before = instances.length;
  assert.equal(client.reconnect(), true);
  assert.equal(instances.length, before + 1, "dials immediately");
  assert.equal(client.status, Status.CONNECTING);
  last().fail();
  // A fresh outage: attempt 1 again, with the first backoff step.
  const ev = events.status.at(-1);
  assert.equal(ev.status, "reconnecting");
  assert.equal(ev.attempt, 1);
  assert.equal(ev.delay, 100);
  clock.advance(100);
  last().fail();
  clock.advance(1000);
  last().fail();
  assert.equal(client.status, Status.OFFLINE, "again maxAttempts attempts");
  client.reconnect();
  last().serverOpen();
  assert.equal(client.status, Status.OPEN);
  assert.equal(client.attempt, 0);
});

test("a successful reconnect resets the counter for the next outage", () => {
  const { clock, client, last, events } = setup({ client: { maxAttempts: 3 } });
  client.connect();
  last().serverOpen();
  last().fail();
  clock.advance(100);
  last().fail();
  clock.advance(200);
  last().serverOpen(); // attempt 2 succeeded
  last().fail();
  assert.equal(events.status.at(-1).attempt, 1);
  assert.equal(events.status.at(-1).delay, 100);
});

test("sends while not open are queued, bounded, and flushed in order on open", () => {
  const { clock, client, last } = setup({ client: { maxQueue: 3 } });
  assert.equal(client.send("before connect"), true);
  client.connect();
  assert.equal(client.send("a"), true);
  assert.equal(client.send("b"), true);
  assert.equal(client.send("overflow"), false, "queue full: send returns false");
  assert.equal(client.queued, 3);
  last().serverOpen();
  assert.deepEqual(last().sent, ["before connect", "a", "b"]);
  assert.equal(client.queued, 0);
  assert.equal(client.send("live"), true);
  assert.deepEqual(last().sent.at(-1), "live");

  // Lost: queue again, flush on the new socket before anything else.
  last().fail();
  client.send("q1");
  client.send("q2");
  clock.advance(10000);
  const ws = last();
  let sentAtOpen = null;
  client.on("status", (e) => { if (e.status === "open") { sentAtOpen = [...ws.sent]; client.send("from open listener"); } });
  ws.serverOpen();
  assert.deepEqual(sentAtOpen, ["q1", "q2"], "queue flushed before the open event");
  assert.deepEqual(ws.sent, ["q1", "q2", "from open listener"]);
});

test("tether's JSON pings are answered with extra members echoed and never delivered", () => {
  const { client, last, events } = setup({ client: { pingInterval: 0 } });
  client.connect();
  last().serverOpen();
  last().serverSendJSON({ type: "ping" });
  last().serverSendJSON({ type: "ping", id: 7, ts: 123 });
  last().serverSend('  {"type":"ping","nested":{"a":[1,2]}}');
  assert.deepEqual(last().sent.map((s) => JSON.parse(s)), [
    { type: "pong" },
    { type: "pong", id: 7, ts: 123 },
    { type: "pong", nested: { a: [1, 2] } },
  ]);
  assert.equal(events.message.length, 0, "heartbeats are not app messages");
  assert.equal(events.ping.length, 3);
  assert.equal(events.ping[1].from, "server");
  assert.deepEqual(events.ping[1].reply, { type: "pong", id: 7, ts: 123 });

  // Pongs are consumed too; look-alikes are data.
  last().serverSendJSON({ type: "pong", id: 99 });
  last().serverSend('{"type":"pingx"}');
  last().serverSend('["ping"]');
  last().serverSend("ping");
  last().serverSend('{"type":"ping"'); // not JSON
  last().serverSend(JSON.stringify({ type: "ping", pad: "x".repeat(5000) })); // over 4 KiB
  assert.deepEqual(events.message.map((m) => m.data.slice(0, 16)), ['{"type":"pingx"}', '["ping"]', "ping", '{"type":"ping"', '{"type":"ping","']);
  assert.equal(events.pong.length, 1);
  assert.equal(events.pong[0].rtt, null, "a pong for no outstanding ping has no rtt");
});

test("custom ping and pong messages", () => {
  const { client, last, events } = setup({
    client: { pingInterval: 0, pingMessage: { type: "hb" }, pongMessage: { type: "hb-ack", v: 1 } },
  });
  client.connect();
  last().serverOpen();
  last().serverSendJSON({ type: "hb", n: 3 });
  assert.deepEqual(JSON.parse(last().sent[0]), { type: "hb-ack", v: 1, n: 3 });
  last().serverSendJSON({ type: "ping" });
  assert.equal(events.message.length, 1, "the default ping type is data now");
});

test("the client pings every interval and reports the round trip", () => {
  const { clock, client, last, events } = setup({ client: { pingInterval: 1000 } });
  client.connect();
  last().serverOpen();
  clock.advance(999);
  assert.equal(last().sent.length, 0);
  clock.advance(1);
  const ping = JSON.parse(last().sent[0]);
  assert.equal(ping.type, "ping");
  assert.equal(ping.id, 1);
  assert.equal(events.ping.at(-1).from, "client");
  clock.advance(42);
  last().serverSendJSON({ type: "pong", id: ping.id });
  assert.equal(events.pong.at(-1).rtt, 42);
  assert.equal(events.pong.at(-1).id, 1);
  clock.advance(958);
  assert.equal(JSON.parse(last().sent[1]).id, 2);
  assert.equal(events.message.length, 0);
});

test("a missed pong kills the connection and reconnects", () => {
  const { clock, client, instances, last, events } = setup({ client: { pingInterval: 1000, maxAttempts: 3 } });
  client.connect();
  const first = last();
  first.serverOpen();
  // Pongs keep it alive past 3 intervals.
  for (let i = 0; i < 5; i++) {
    clock.advance(1000);
    first.serverSendJSON({ type: "pong", id: JSON.parse(first.sent.at(-1)).id });
  }
  assert.equal(client.status, Status.OPEN);
  // Then nothing: dead after the default 3 × interval.
  clock.advance(2999);
  assert.equal(client.status, Status.OPEN);
  clock.advance(1);
  assert.equal(client.status, Status.RECONNECTING);
  assert.deepEqual(first.closedWith, { code: CloseCode.CLIENT_HEARTBEAT_TIMEOUT, reason: "no pong from tether" });
  assert.equal(events.status.at(-1).code, CloseCode.CLIENT_HEARTBEAT_TIMEOUT);
  // The old socket's late events are ignored.
  first.serverSendJSON({ type: "pong", id: 1 });
  first.serverClose(3008, "", true);
  assert.equal(client.status, Status.RECONNECTING);
  clock.advance(100);
  assert.equal(instances.length, 2);
  last().serverOpen();
  assert.equal(client.status, Status.OPEN);
});

test("an explicit pongTimeout is honoured and pingInterval 0 disables heartbeats", () => {
  const a = setup({ client: { pingInterval: 1000, pongTimeout: 1500 } });
  a.client.connect();
  a.last().serverOpen();
  a.clock.advance(1499);
  assert.equal(a.client.status, Status.OPEN);
  a.clock.advance(1);
  assert.equal(a.client.status, Status.RECONNECTING);

  const b = setup({ client: { pingInterval: 0 } });
  b.client.connect();
  b.last().serverOpen();
  b.clock.advance(1e7);
  assert.equal(b.client.status, Status.OPEN);
  assert.deepEqual(b.last().sent, []);
});

test("close() closes with 1000 and never reconnects", () => {
  const { clock, client, instances, last, events } = setup();
  client.connect();
  const ws = last();
  ws.serverOpen();
  client.send("x");
  client.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "" });
  assert.equal(client.status, Status.CLOSED);
  assert.deepEqual(events.status.at(-1), { status: "closed", code: 1000, reason: "", byClient: true });
  ws.serverClose(1000, "", true);
  clock.advance(1e9);
  assert.equal(instances.length, 1);
  assert.equal(client.send("after close"), false);
  assert.equal(client.reconnect(), false);
  client.connect();
  assert.equal(instances.length, 1);
  assert.deepEqual(clock.delays(), [], "no timers left");
});

test("close() while reconnecting cancels the pending attempt", () => {
  const { clock, client, instances, last } = setup();
  client.connect();
  last().serverOpen();
  last().fail();
  assert.equal(client.status, Status.RECONNECTING);
  client.close();
  clock.advance(1e9);
  assert.equal(instances.length, 1);
  assert.equal(client.status, Status.CLOSED);
});

test("do-not-retry close codes are reported as closed, not retried", () => {
  const cases = [
    { code: 1000, reason: "bye" },
    { code: 1008, reason: "policy" },
    { code: 4000, reason: "app" },
    { code: 4403, reason: "forbidden" },
    { code: 4999, reason: "" },
    { code: 1014, reason: "upstream unavailable" },
    { code: 1014, reason: "reconnect attempts exhausted" },
  ];
  for (const c of cases) {
    const { clock, client, instances, last, events } = setup();
    client.connect();
    last().serverOpen();
    last().serverClose(c.code, c.reason);
    assert.equal(client.status, Status.CLOSED, `code ${c.code}`);
    assert.deepEqual(events.status.at(-1), { status: "closed", code: c.code, reason: c.reason, wasClean: true, byClient: false });
    clock.advance(1e9);
    assert.equal(instances.length, 1, `code ${c.code}: no retry`);
    // The page can still choose to reconnect.
    assert.equal(client.reconnect(), true);
    assert.equal(instances.length, 2);
  }
});

test("1014 after an upstream 'unavailable' status is not retried; 1014 otherwise is", () => {
  const a = setup();
  a.client.connect();
  a.last().serverOpen();
  a.last().serverSendJSON({ type: "upstream", status: "reconnecting", attempt: 1 });
  a.last().serverSendJSON({ type: "upstream", status: "unavailable" });
  a.last().serverClose(1014, "");
  assert.equal(a.client.status, Status.CLOSED);
  assert.deepEqual(a.events.upstream.map((u) => u.status), ["connected", "reconnecting", "unavailable"]);
  assert.equal(a.events.message.length, 0, "upstream status messages are consumed");

  const b = setup();
  b.client.connect();
  b.last().serverOpen();
  b.last().serverClose(1014, "upstream protocol error");
  assert.equal(b.client.status, Status.RECONNECTING);
});

test("codes that mean 'try again' are retried", () => {
  for (const code of [1001, 1006, 1011, 1012, 1013, 3000]) {
    const { clock, client, instances, last } = setup();
    client.connect();
    last().serverOpen();
    last().serverClose(code, "", code !== 1006);
    assert.equal(client.status, Status.RECONNECTING, `code ${code}`);
    clock.advance(100);
    assert.equal(instances.length, 2, `code ${code}: dialed again`);
  }
  assert.equal(shouldReconnect({ code: 1012, reason: "tether restarting", upstreamUnavailable: false }), true);
  assert.equal(shouldReconnect({ code: 1013, reason: "buffer overflow", upstreamUnavailable: false }), true);
  assert.equal(shouldReconnect({ code: 1014, reason: "", upstreamUnavailable: true }), false);
});

test("a custom shouldReconnect overrides the policy", () => {
  const { client, last } = setup({ client: { shouldReconnect: ({ code }) => code !== 1001 } });
  client.connect();
  last().serverOpen();
  last().serverClose(1001, "");
  assert.equal(client.status, Status.CLOSED);
});

test("upstream status events carry tether's attempt and the open implies connected", () => {
  const { clock, client, last, events } = setup();
  client.connect();
  last().serverOpen();
  last().serverSendJSON({ type: "upstream", status: "reconnecting", attempt: 2 });
  assert.equal(client.upstream, "reconnecting");
  last().serverSendJSON({ type: "upstream", status: "connected" });
  last().serverSendJSON({ type: "upstream", status: "weird" }); // unknown: app data
  assert.deepEqual(events.upstream, [
    { status: "connected", implicit: true },
    { status: "reconnecting", attempt: 2, implicit: false },
    { status: "connected", implicit: false },
  ]);
  assert.equal(events.message.length, 1);
  last().fail();
  clock.advance(100);
  last().serverOpen();
  assert.equal(events.upstream.length, 3, "already connected: no implicit event");
});

test("drop() kills the socket with 3000 and reconnects by itself", () => {
  const { clock, client, instances, last, events } = setup();
  client.connect();
  const ws = last();
  ws.serverOpen();
  assert.equal(client.drop(), true);
  assert.deepEqual(ws.closedWith, { code: 3000, reason: "dropped by client" });
  assert.equal(client.status, Status.RECONNECTING);
  assert.equal(events.status.at(-1).code, 3000);
  ws.serverClose(3000, "", true); // late close of the old socket: ignored
  clock.advance(100);
  assert.equal(instances.length, 2);
  last().serverOpen();
  assert.equal(client.status, Status.OPEN);
});

test("app messages are delivered in order, text and binary", () => {
  const { client, last, events } = setup();
  client.connect();
  last().serverOpen();
  const buf = new Uint8Array([1, 2, 3]).buffer;
  last().serverSend("1");
  last().serverSend(buf);
  last().serverSend('{"type":"chat","text":"hi"}');
  assert.deepEqual(events.message.map((m) => m.data), ["1", buf, '{"type":"chat","text":"hi"}']);
});

test("a throwing listener does not break the client", async () => {
  const { client, last } = setup();
  const errors = [];
  const saved = globalThis.reportError;
  globalThis.reportError = (e) => errors.push(e);
  try {
    client.on("status", () => { throw new Error("boom"); });
    client.connect();
    last().serverOpen();
    assert.equal(client.status, Status.OPEN);
    assert.equal(errors.length, 2);
  } finally {
    if (saved === undefined) delete globalThis.reportError; else globalThis.reportError = saved;
  }
});

test("options: protocols, binaryType and a URL function", () => {
  const { FakeWebSocket, instances } = fakeWebSocketClass();
  let n = 0;
  const client = new TetherClient(() => `ws://t/${++n}`, {
    WebSocket: FakeWebSocket, protocols: ["v1"], binaryType: "arraybuffer", pingInterval: 0,
    setTimeout: () => 0, clearTimeout: () => {},
  });
  client.connect();
  assert.equal(instances[0].url, "ws://t/1?tether_resume=new"); // resume is on by default
  assert.deepEqual(instances[0].protocols, ["v1"]);
  assert.equal(instances[0].binaryType, "arraybuffer");
  assert.throws(() => new TetherClient("ws://x", { WebSocket: FakeWebSocket, pingMessage: { type: "a" }, pongMessage: { type: "a" } }));
});

// Session resume (README "Client session resume", wire protocol in
// client/README.md).

function resumable(options = {}) {
  const t = setup({ ...options, client: { resume: true, pingInterval: 0, ...options.client } });
  t.client.connect();
  t.last().serverOpen();
  return t;
}

const session = (token, resumed, ack) => ({ type: "tether.session", token, resumed, ack });
const dataSent = (ws) => ws.sent.filter((m) => typeof m !== "string" || !m.includes('"tether.ack"'));

test("resume: asks for a resumable session and opens on tether.session", () => {
  const { client, last, statuses, events } = resumable();
  assert.equal(last().url, "ws://tether.test/?tether_resume=new");
  assert.deepEqual(statuses(), ["connecting"], "not open before tether.session");
  client.send("early");
  assert.deepEqual(last().sent, [], "queued until the session message");
  last().serverSendJSON(session("tok1", false, 0));
  assert.deepEqual(statuses(), ["connecting", "open"]);
  assert.deepEqual(last().sent, ["early"]);
  assert.equal(client.resumable, true);
  assert.equal(client.unconfirmed, 1);
  assert.equal(events.message.length, 0, "tether.session is not delivered");
  assert.deepEqual(events.session, [{ resumed: false, refused: false, resent: 0, unconfirmed: [] }]);
});

test("resume: tether.ack frees what tether has; the client acknowledges in time and never when idle", () => {
  const { client, last, clock, events } = resumable({ client: { ackEvery: 4, ackDelay: 50 } });
  const ws = last();
  ws.serverSendJSON(session("tok1", false, 0));
  for (const m of ["a", "b", "c"]) client.send(m);
  ws.serverSendJSON({ type: "tether.ack", ack: 2 });
  assert.equal(client.unconfirmed, 1);
  assert.equal(events.message.length, 0, "tether.ack is not delivered");
  // Four messages: an ack at once.
  for (const m of ["1", "2", "3", "4"]) ws.serverSend(m);
  assert.deepEqual(ws.sent.slice(3), ['{"type":"tether.ack","ack":4}']);
  // One more: an ack after the delay, then nothing while idle.
  ws.serverSend("5");
  assert.equal(ws.sent.length, 4);
  clock.advance(50);
  assert.deepEqual(ws.sent.slice(4), ['{"type":"tether.ack","ack":5}']);
  clock.advance(10000);
  assert.equal(ws.sent.length, 5, "no ack on an idle session");
  assert.deepEqual(clock.delays(), [], "no timer on an idle session");
});

test("resume: after a loss, resumes with token and count and re-sends what tether lacks, before the queue", () => {
  const { client, last, clock, events, instances } = resumable({ client: { ackEvery: 100 } });
  let ws = last();
  ws.serverSendJSON(session("tok1", false, 0));
  for (const m of ["m0", "m1", "m2"]) client.send(m);
  ws.serverSend("u0");
  ws.serverSend("u1");
  ws.fail(); // broken, not closed
  client.send("m3"); // queued while down
  clock.advance(1000);
  ws = last();
  assert.equal(instances.length, 2);
  assert.equal(ws.url, "ws://tether.test/?tether_resume=tok1&tether_ack=2");
  ws.serverOpen();
  ws.serverSendJSON(session("tok2", true, 1)); // tether has m0 only
  assert.deepEqual(dataSent(ws), ["m1", "m2", "m3"]);
  assert.equal(events.session.at(-1).resumed, true);
  assert.equal(events.session.at(-1).resent, 2);
  ws.serverSend("u2");
  assert.deepEqual(events.message.map((e) => e.data), ["u0", "u1", "u2"]);
  // The next loss resumes with the new token and the whole count.
  ws.fail();
  clock.advance(1000);
  assert.equal(last().url, "ws://tether.test/?tether_resume=tok2&tether_ack=3");
});

test("resume: a refusal tells the app what tether never confirmed and drops it by default", () => {
  const { client, last, clock, events } = resumable();
  let ws = last();
  ws.serverSendJSON(session("tok1", false, 0));
  client.send("m0");
  client.send("m1");
  ws.serverSendJSON({ type: "tether.ack", ack: 1 });
  ws.fail();
  clock.advance(1000);
  ws = last();
  ws.serverOpen();
  ws.serverSendJSON(session("tok9", false, 0));
  assert.deepEqual(events.session.at(-1), { resumed: false, refused: true, resent: 0, unconfirmed: ["m1"] });
  assert.deepEqual(dataSent(ws), [], "dropped by default");
  assert.equal(client.unconfirmed, 0);
});

test("resume: resendUnconfirmed re-sends the unconfirmed messages into the new session first", () => {
  const { client, last, clock } = resumable({ client: { resendUnconfirmed: true } });
  let ws = last();
  ws.serverSendJSON(session("tok1", false, 0));
  client.send("m0");
  ws.fail();
  client.send("m1");
  clock.advance(1000);
  ws = last();
  ws.serverOpen();
  ws.serverSendJSON(session("tok9", false, 0));
  assert.deepEqual(dataSent(ws), ["m0", "m1"]);
});

test("resume: drop() and a pong timeout give the socket up without a Close; the resume closes it", () => {
  const { client, last, clock } = resumable({ client: { pingInterval: 100 } });
  const ws = last();
  ws.serverSendJSON(session("tok1", false, 0));
  client.drop();
  assert.equal(ws.closedWith, null, "a Close would end the session at tether");
  clock.advance(1000);
  last().serverOpen();
  last().serverSendJSON(session("tok2", true, 0));
  assert.notEqual(ws.closedWith, null, "closed once resumed");
  // A pong timeout does the same.
  const ws2 = last();
  clock.advance(300); // no pong
  assert.equal(ws2.closedWith, null);
  clock.advance(1000);
  assert.notEqual(last(), ws2);
  assert.match(last().url, /tether_resume=tok2&tether_ack=0$/);
});

test("resume: heartbeats and upstream status messages are counted as the wire protocol says", () => {
  const { client, last, clock } = resumable({ client: { ackEvery: 1000 } });
  let ws = last();
  ws.serverSendJSON(session("tok1", false, 0));
  ws.serverSendJSON({ type: "ping", id: 1 }); // heartbeat: not counted
  ws.serverSendJSON({ type: "upstream", status: "reconnecting", attempt: 1 }); // data
  ws.serverSend("x"); // data
  ws.fail();
  clock.advance(1000);
  assert.match(last().url, /tether_ack=2$/);
  void client;
});

test("resume: no tether.session first means resume is off at tether", () => {
  const { client, last, events, statuses } = resumable();
  last().serverSend("hello");
  assert.deepEqual(statuses(), ["connecting", "open"]);
  assert.deepEqual(events.message.map((e) => e.data), ["hello"]);
  assert.equal(client.resumable, false);
  client.send("m");
  assert.equal(client.unconfirmed, 0);
});

test("resume: close() sends a Close and forgets the session; resume: false asks for nothing", () => {
  const { client, last } = resumable();
  const ws = last();
  ws.serverSendJSON(session("tok1", false, 0));
  client.close();
  assert.equal(ws.closedWith.code, 1000);
  const plain = setup({ client: { resume: false } });
  plain.client.connect();
  assert.equal(plain.last().url, "ws://tether.test/");
});

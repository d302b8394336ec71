// demo.js: the tether demo page. It connects through tether with
// tether.js, shows connection, upstream and heartbeat status, sends
// numbered messages to the echo backend and checks that every one comes
// back exactly once, in order.
//
// The page reads /config.json (written by `tether demo`); URL query
// parameters override the client options, for tests and experiments:
//   ?url=ws://host:port/path  pingInterval=ms  pongTimeout=ms
//   initialDelay=ms  maxDelay=ms  maxAttempts=n  maxQueue=n
//   autoInterval=ms  autoStart=1
//
// window.tetherDemo exposes the client, the history of status and upstream
// events, and a snapshot() of the counters.

import { TetherClient, Status } from "./tether.js";

const $ = (id) => document.getElementById(id);
const LOG_LIMIT = 60;

const clientOptionNames = ["pingInterval", "pongTimeout", "initialDelay", "maxDelay", "maxAttempts", "maxQueue"];

// EchoCheck tracks numbered messages and their echoes.
class EchoCheck {
  constructor() {
    this.sent = 0; // highest number sent; numbers are 1, 2, ...
    this.counts = new Map(); // number -> echoes received
    this.distinct = 0;
    this.duplicated = 0;
    this.outOfOrder = 0;
    this.maxEchoed = 0;
    this.givenUp = 0; // in flight when a resume was refused
  }

  next() {
    return ++this.sent;
  }

  // echo records an echo of number n and returns "ok", "duplicate",
  // "out of order" or "unknown".
  echo(n) {
    if (n < 1 || n > this.sent) return "unknown";
    const seen = this.counts.get(n) ?? 0;
    this.counts.set(n, seen + 1);
    if (seen > 0) {
      this.duplicated++;
      return "duplicate";
    }
    this.distinct++;
    if (n < this.maxEchoed) {
      this.outOfOrder++;
      return "out of order";
    }
    this.maxEchoed = n;
    return "ok";
  }

  // Numbers below the highest echoed one that never came back.
  get missing() { return this.maxEchoed - this.distinct; }
  // Numbers sent after the highest echoed one: still on their way.
  get pending() { return this.sent - this.maxEchoed; }
  get ok() { return this.missing === 0 && this.duplicated === 0 && this.outOfOrder === 0; }

  // resync gives up the numbers still on their way when a resume was
  // refused (the old session, and what it had in flight, is gone) and
  // returns how many.
  resync() {
    const gone = this.sent - this.distinct;
    this.givenUp += gone;
    for (let n = 1; n <= this.sent; n++) if (!this.counts.has(n)) this.counts.set(n, 1);
    this.distinct = this.maxEchoed = this.sent;
    return gone;
  }
}

function timeOfDay(d = new Date()) {
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function log(listId, text, cls = "") {
  const list = $(listId);
  const li = document.createElement("li");
  li.textContent = `${timeOfDay()}  ${text}`;
  if (cls) li.className = cls;
  list.prepend(li);
  while (list.children.length > LOG_LIMIT) list.lastElementChild.remove();
}

function setBadge(id, state, text = state) {
  const el = $(id);
  el.dataset.state = state;
  el.textContent = text;
}

function tetherURL(cfg, params) {
  if (params.get("url")) return params.get("url");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const host = cfg.tether.host || location.hostname || "localhost";
  return `${scheme}//${host}:${cfg.tether.port}${cfg.tether.path || "/"}`;
}

function clientOptions(cfg, params) {
  const opts = { ...(cfg.client ?? {}) };
  for (const name of clientOptionNames) {
    const v = params.get(name);
    if (v !== null && v !== "" && Number.isFinite(Number(v))) opts[name] = Number(v);
  }
  return opts;
}

function statusDetail(e) {
  switch (e.status) {
    case Status.CONNECTING:
      return e.attempt ? `attempt ${e.attempt}` : "";
    case Status.OPEN:
      return e.flushed ? `sent ${e.flushed} queued message(s)` : "";
    case Status.RECONNECTING:
      return `attempt ${e.attempt}/${e.maxAttempts || "∞"} in ${e.delay} ms, after close ${e.code}${e.reason ? ` "${e.reason}"` : ""}`;
    case Status.OFFLINE:
      return `gave up after ${e.attempts} attempts (last close ${e.code})`;
    case Status.CLOSED:
      return e.byClient
        ? `closed by the page (${e.code})`
        : `closed by the server with ${e.code}${e.reason ? ` "${e.reason}"` : ""}: not retried`;
    default:
      return "";
  }
}

async function main() {
  const params = new URLSearchParams(location.search);
  const cfg = await (await fetch("config.json", { cache: "no-store" })).json();
  const url = tetherURL(cfg, params);
  $("ws-url").textContent = url;

  // "Go offline" points the client at a port nothing listens on until
  // offlineUntil: every attempt fails as on a dead network.
  let offlineUntil = 0;
  const client = new TetherClient(() => (Date.now() < offlineUntil ? "ws://127.0.0.1:9/" : url), clientOptions(cfg, params));
  const check = new EchoCheck();
  // Every status and upstream event, in order, for tests and the curious.
  const history = [];
  const stats = {
    opens: 0,
    resumes: 0,
    refusals: 0,
    serverPings: 0,
    lastServerPing: 0,
    clientPings: 0,
    clientPongs: 0,
    rttLast: null,
    rttSum: 0,
    rttCount: 0,
  };

  // ---- connection and upstream status ----
  client.on("status", (e) => {
    history.push({ kind: "status", ...e });
    setBadge("conn-status", e.status);
    $("conn-detail").textContent = statusDetail(e);
    $("reconnect").disabled = !(e.status === Status.OFFLINE || e.status === Status.CLOSED);
    if (e.status === Status.OPEN) {
      stats.opens++;
      $("open-count").textContent = stats.opens;
      $("reconnect-count").textContent = Math.max(0, stats.opens - 1);
    }
    const cls = { open: "ok", offline: "bad", closed: "bad", reconnecting: "warn" }[e.status] ?? "";
    log("event-log", `client ${e.status} ${statusDetail(e)}`.trim(), cls);
    renderCheck();
  });

  client.on("upstream", (e) => {
    history.push({ kind: "upstream", ...e });
    const text = e.status === "reconnecting" && e.attempt ? `reconnecting` : e.status;
    setBadge("upstream-status", e.status, text);
    $("upstream-detail").textContent = e.status === "reconnecting" && e.attempt ? `attempt ${e.attempt}` : "";
    if (!e.implicit) {
      const cls = { connected: "ok", unavailable: "bad", reconnecting: "warn" }[e.status];
      log("event-log", `tether: upstream ${e.status}${e.attempt ? ` (attempt ${e.attempt})` : ""}`, cls);
    }
  });

  // ---- heartbeats ----
  client.on("ping", (e) => {
    if (e.from === "server") {
      const now = performance.now();
      const every = stats.lastServerPing ? ` (${((now - stats.lastServerPing) / 1000).toFixed(1)} s after the previous one)` : "";
      stats.lastServerPing = now;
      stats.serverPings++;
      $("server-pings").textContent = stats.serverPings;
      $("server-ping-detail").textContent = `, last at ${timeOfDay()}${every}`;
      log("hb-log", `tether → client ping ${JSON.stringify(e.message)}, answered ${JSON.stringify(e.reply)}`);
    } else {
      stats.clientPings++;
      $("client-pings").textContent = stats.clientPings;
      log("hb-log", `client → tether ping #${e.id}`);
    }
  });

  client.on("pong", (e) => {
    stats.clientPongs++;
    $("client-pongs").textContent = stats.clientPongs;
    if (e.rtt !== null) {
      stats.rttLast = e.rtt;
      stats.rttSum += e.rtt;
      stats.rttCount++;
      $("rtt-last").textContent = e.rtt.toFixed(1);
      $("rtt-avg").textContent = (stats.rttSum / stats.rttCount).toFixed(1);
    }
    log("hb-log", `tether → client pong #${e.id ?? "?"}${e.rtt !== null ? `, round trip ${e.rtt.toFixed(1)} ms` : ""}`, "ok");
  });

  // ---- messages and the echo check ----
  function renderCheck() {
    $("sent-count").textContent = check.sent;
    $("echoed-count").textContent = check.distinct;
    $("pending-count").textContent = check.pending;
    $("missing-count").textContent = check.missing;
    $("dup-count").textContent = check.duplicated;
    $("ooo-count").textContent = check.outOfOrder;
    $("queued-count").textContent = client.queued;
    const box = $("check");
    box.dataset.ok = String(check.ok);
    box.dataset.pending = String(check.pending > 0);
    let text;
    if (!check.ok) {
      text = "✗ not every message was echoed exactly once, in order";
    } else if (check.pending > 0) {
      text = `✓ so far every message echoed exactly once, in order (${check.pending} in flight)`;
    } else {
      text = "✓ every message echoed exactly once, in order";
    }
    $("check-text").textContent = text;
  }

  function sendNumbered() {
    const n = check.next();
    if (!client.send(JSON.stringify({ seq: n }))) {
      log("echo-log", `#${n} dropped: send queue full`, "bad");
    }
    renderCheck();
  }

  client.on("message", (e) => {
    const data = e.data;
    let seq = null;
    if (typeof data === "string" && data.startsWith("{")) {
      try {
        const v = JSON.parse(data);
        if (Number.isInteger(v?.seq)) seq = v.seq;
      } catch {
        // not JSON: plain text
      }
    }
    if (seq === null) {
      log("echo-log", `echo ${typeof data === "string" ? JSON.stringify(data) : "(binary)"}`);
      return;
    }
    const verdict = check.echo(seq);
    if (verdict !== "ok" || seq % 10 === 0 || check.pending === 0) {
      log("echo-log", `echo #${seq}${verdict === "ok" ? "" : ` ${verdict}`}`, verdict === "ok" ? "" : "bad");
    }
    renderCheck();
  });

  // Auto-sender.
  let timer = null;
  function setAuto(on) {
    if (timer !== null) {
      clearInterval(timer);
      timer = null;
    }
    if (on) {
      const every = Math.max(10, Number($("auto-interval").value) || 250);
      timer = setInterval(sendNumbered, every);
    }
    $("auto-toggle").dataset.running = String(on);
    $("auto-toggle").textContent = on ? "stop" : "start";
  }
  $("auto-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setAuto(timer === null);
  });
  if (params.get("autoInterval")) $("auto-interval").value = params.get("autoInterval");
  $("send-numbered").addEventListener("click", sendNumbered);

  $("text-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("text-input").value;
    if (text === "") return;
    client.send(text);
    $("text-input").value = "";
    renderCheck();
  });

  // ---- buttons ----
  async function backendAction(action) {
    $("action-result").textContent = `${action} backend…`;
    try {
      const r = await fetch(`api/backend/${action}`, { method: "POST" });
      const body = await r.json().catch(() => ({}));
      $("action-result").textContent = r.ok ? `${action}: ${body.message ?? "ok"}` : `${action} failed: ${r.status} ${body.error ?? ""}`;
      log("event-log", `backend ${action} requested`, "warn");
    } catch (err) {
      $("action-result").textContent = `${action} failed: ${err}`;
    }
    refreshBackend();
  }
  $("restart-backend").addEventListener("click", () => backendAction("restart"));
  $("stop-backend").addEventListener("click", () => backendAction("stop"));
  $("start-backend").addEventListener("click", () => backendAction("start"));
  $("drop-connection").addEventListener("click", () => {
    if (client.drop()) {
      log("event-log", client.resumable
        ? "client cut its connection (no Close): the session resumes"
        : "client dropped its connection (code 3000)", "warn");
    }
  });
  $("offline-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const seconds = Math.max(1, Number($("offline-seconds").value) || 5);
    offlineUntil = Date.now() + seconds * 1000;
    client.drop();
    log("event-log", `page offline for ${seconds} s`, "warn");
    setTimeout(() => {
      log("event-log", "page back online", "ok");
      if (client.status === Status.OFFLINE || client.status === Status.CLOSED) client.reconnect();
    }, seconds * 1000);
  });
  client.on("session", (e) => {
    history.push({ kind: "session", resumed: e.resumed, refused: e.refused });
    if (e.resumed) {
      stats.resumes++;
      log("event-log", `session resumed: ${e.resent} message(s) sent again, nothing lost`, "ok");
    } else if (e.refused) {
      stats.refusals++;
      const gone = check.resync();
      log("event-log", `resume refused (the session is gone): ${e.unconfirmed.length} unconfirmed message(s) dropped, resync gives up ${gone} in flight`, "bad");
      renderCheck();
    }
    $("resume-count").textContent = `${stats.resumes} resumed, ${stats.refusals} refused`;
  });
  $("reconnect").addEventListener("click", () => {
    client.reconnect();
  });

  async function refreshBackend() {
    try {
      const b = await (await fetch("api/backend", { cache: "no-store" })).json();
      setBadge("backend-status", b.state);
      $("backend-detail").textContent = `${b.active} open connection(s), ${b.connections} accepted, ${b.restarts} restart(s)`;
    } catch {
      setBadge("backend-status", "unknown");
      $("backend-detail").textContent = "demo server unreachable";
    }
  }
  setInterval(refreshBackend, 1000);
  refreshBackend();

  window.tetherDemo = {
    client,
    check,
    sendNumbered,
    setAuto,
    history,
    snapshot: () => ({
      status: client.status,
      upstream: client.upstream,
      queued: client.queued,
      sent: check.sent,
      echoed: check.distinct,
      pending: check.pending,
      missing: check.missing,
      duplicated: check.duplicated,
      outOfOrder: check.outOfOrder,
      givenUp: check.givenUp,
      resumable: client.resumable,
      ok: check.ok,
      ...stats,
    }),
  };

  client.connect();
  if (params.get("autoStart") === "1") setAuto(true);
  document.body.dataset.ready = "true";
}

main().catch((err) => {
  setBadge("conn-status", "closed", "error");
  $("conn-detail").textContent = String(err);
  throw err;
});

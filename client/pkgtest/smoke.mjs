// Run by `go test ./client/ -run TestNpmPackage` from a fresh project that
// installed the packed @tether-proxy/client: imports the package by its
// name and talks through a live tether to an echo backend. Usage:
// node smoke.mjs ws://127.0.0.1:PORT/ ; prints a JSON report, exits 0 when
// every check passed.
import DefaultClient, { TetherClient, Status, CloseCode } from "@tether-proxy/client";

const url = process.argv[2];
const sent = ["one", "two", JSON.stringify({ type: "chat", text: "three" }), "four"];
const report = { statuses: [], received: [], serverPings: 0, pongRTTs: [], closed: null };

function fail(why) {
  console.log(JSON.stringify({ ok: false, why, ...report }));
  process.exit(1);
}
if (DefaultClient !== TetherClient) fail("the default export is not TetherClient");
if (typeof globalThis.WebSocket !== "function") fail("no global WebSocket (Node 20 needs --experimental-websocket)");

const client = new TetherClient(url, { pingInterval: 200, maxAttempts: 2 });
const timer = setTimeout(() => fail("timed out"), 20000);
let closing = false;
function check() {
  if (closing || report.received.length < sent.length || report.serverPings === 0 || report.pongRTTs.length === 0) return;
  closing = true;
  client.close(CloseCode.NORMAL, "done");
}
client.on("status", (e) => {
  report.statuses.push(e.status);
  if (e.status === Status.CLOSED) {
    clearTimeout(timer);
    report.closed = { code: e.code, byClient: e.byClient };
    if (!closing) fail("closed before the exchange was complete");
    const inOrder = report.received.length === sent.length && report.received.every((m, i) => m === sent[i]);
    if (!inOrder) fail("the echoes differ from what was sent");
    console.log(JSON.stringify({ ok: true, ...report }));
    process.exit(0);
  }
  if (e.status === Status.RECONNECTING || e.status === Status.OFFLINE) fail("connection lost: " + JSON.stringify(e));
});
client.on("ping", (e) => { if (e.from === "server") { report.serverPings++; check(); } });
client.on("pong", (e) => { if (e.rtt !== null) { report.pongRTTs.push(e.rtt); check(); } });
client.on("message", (e) => { report.received.push(e.data); check(); });
client.connect();
for (const m of sent) {
  if (!client.send(m)) fail("send refused " + m); // queued until open, then flushed in order
}

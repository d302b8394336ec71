// Real servers and clients of stateful WebSocket protocols, for the state
// replay interop tests (interop/replay_test.go; README "State replay on
// upstream reconnect"). Each mode prints one JSON object per line on
// stdout; clients read commands, one per line, on stdin.
//
//   node peers.js gql-server PORT GEN     graphql-ws server (graphql-transport-ws)
//   node peers.js stws-server PORT GEN    subscriptions-transport-ws server (graphql-ws)
//   node peers.js sio-server PORT GEN     socket.io server, connection state recovery on
//   node peers.js gql-client URL          graphql-ws client: subscriptions a and b
//   node peers.js stws-client URL         subscriptions-transport-ws client: a and b
//   node peers.js sio-client URL          socket.io-client, websocket transport
//   node peers.js stomp-client URL        @stomp/stompjs: subscribes /topic/stomp.a and /topic/stomp.b (a and b);
//                                         splitLargeFrames, 250-character chunks (its own frames are shorter)
//   node peers.js stomp-pub URL           @stomp/stompjs: publishes to both every 50 ms, reconnecting
//                                         (RabbitMQ routes MQTT topic a and STOMP /topic/a alike: the
//                                         STOMP peers use routing keys of their own)
//   node peers.js mqtt-client URL         mqtt.js: subscribes a (QoS 1) and b (QoS 0)
//   node peers.js mqtt-pub URL            mqtt.js: publishes to a (QoS 1) and b (QoS 2) every 50 ms, reconnecting
//
// Servers: PORT 0 picks one ("listening" says which); GEN names the server
// process in the events it sends, so the test tells a restarted server's
// events from the first one's. Client commands: "complete b" ends
// subscription b (STOMP, MQTT: "unsubscribe b", answered by
// "unsubscribed" once the broker confirmed); "emit" (socket.io) emits with
// an acknowledgement; "publish" (mqtt-client) publishes with QoS 1 and
// says "published" at the PUBACK; "flow" (mqtt-client) publishes to c
// with QoS 1 and to d with QoS 2 every 250 ms from then on, and says
// "acked" (name c or d, data the count) at every 10th acknowledgement of
// each; "flow" (stomp-client) sends a 4,000-byte message to c, cut into
// seventeen chunks, with a receipt every 250 ms (slow enough that what it
// sends during a broker restart fits tether's buffer), and says "acked"
// (name c) at every 10th receipt. Publishers send "topic:CONN:i", CONN
// counting their connections, so the test tells messages published after
// a broker restart.
"use strict";

const http = require("http");
const readline = require("readline");
const WebSocket = require("ws");

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const [mode, arg, gen] = process.argv.slice(2);

function schema() {
  const { GraphQLSchema, GraphQLObjectType, GraphQLString, GraphQLNonNull } = require("graphql");
  return new GraphQLSchema({
    query: new GraphQLObjectType({ name: "Query", fields: { hello: { type: GraphQLString, resolve: () => "hi" } } }),
    subscription: new GraphQLObjectType({
      name: "Subscription",
      fields: {
        ticks: {
          type: GraphQLString,
          args: { name: { type: new GraphQLNonNull(GraphQLString) } },
          // Every 50 ms: "name:GEN:i".
          subscribe: async function* (_, { name }) {
            for (let i = 0; ; i++) {
              yield { ticks: `${name}:${gen}:${i}` };
              await new Promise((r) => setTimeout(r, 50));
            }
          },
        },
      },
    }),
  });
}

function listen(server) {
  server.listen(Number(arg), "127.0.0.1", () => out({ ev: "listening", port: server.address().port }));
  commands(() => {}); // exit when stdin closes
}

function gqlServer() {
  const { useServer } = require("graphql-ws/use/ws");
  const server = http.createServer();
  const wss = new WebSocket.Server({ server });
  useServer(
    {
      schema: schema(),
      onConnect: async () => {
        // Authenticate asynchronously, as real servers do: a subscribe
        // that does not wait for the ack is refused with 4401.
        await new Promise((r) => setTimeout(r, 20));
        out({ ev: "connect" });
        return true;
      },
      onSubscribe: (_ctx, id, payload) => {
        out({ ev: "subscribe", id: String(id), name: payload?.variables?.name });
      },
      onComplete: (_ctx, id) => {
        out({ ev: "complete", id: String(id) });
      },
    },
    wss,
  );
  listen(server);
}

function stwsServer() {
  const { SubscriptionServer } = require("subscriptions-transport-ws");
  const { execute, subscribe } = require("graphql");
  const server = http.createServer();
  SubscriptionServer.create(
    {
      schema: schema(),
      execute,
      subscribe,
      onConnect: () => {
        out({ ev: "connect" });
        return true;
      },
      onOperation: (msg, params) => {
        out({ ev: "subscribe", id: String(msg.id), name: params.variables?.name });
        return params;
      },
      onOperationComplete: (_ws, id) => out({ ev: "complete", id: String(id) }),
    },
    { server, path: "/" },
  );
  listen(server);
}

function sioServer() {
  const { Server } = require("socket.io");
  const server = http.createServer();
  const io = new Server(server, { transports: ["websocket"], connectionStateRecovery: { maxDisconnectionDuration: 60000 } });
  // Every Engine.IO connection, socket.io namespace connect or not: a
  // connection swapped under a live client shows as one without a connect.
  io.engine.on("connection", () => out({ ev: "engine" }));
  io.on("connection", (socket) => {
    out({ ev: "connect", recovered: socket.recovered });
    const timer = setInterval(() => socket.emit("tick", gen), 50);
    socket.on("emit", (v, ack) => ack(`${v}:${gen}`));
    socket.on("disconnect", () => clearInterval(timer));
  });
  listen(server);
}

const query = "subscription($name: String!) { ticks(name: $name) }";

function gqlClient() {
  const { createClient } = require("graphql-ws");
  const client = createClient({
    url: arg,
    webSocketImpl: WebSocket,
    lazy: false,
    retryAttempts: 0,
    on: {
      connected: () => out({ ev: "connected" }),
      closed: (e) => out({ ev: "closed", code: e?.code ?? 0, reason: e?.reason ?? "" }),
    },
  });
  const subs = {};
  for (const name of ["a", "b"]) {
    subs[name] = client.subscribe(
      { query, variables: { name } },
      {
        next: (v) => out({ ev: "next", name, data: v.data?.ticks ?? null, errors: v.errors ?? null }),
        error: (e) => out({ ev: "error", name, message: String(e?.message ?? e?.code ?? e) }),
        complete: () => out({ ev: "complete", name }),
      },
    );
  }
  commands((line) => {
    const [op, name] = line.split(" ");
    if (op === "complete" && subs[name]) subs[name]();
  });
}

function stwsClient() {
  const { SubscriptionClient } = require("subscriptions-transport-ws");
  const client = new SubscriptionClient(arg, { reconnect: false, lazy: false }, WebSocket);
  client.onConnected(() => out({ ev: "connected" }));
  client.onReconnected(() => out({ ev: "reconnected" }));
  client.onDisconnected(() => out({ ev: "closed" }));
  const subs = {};
  for (const name of ["a", "b"]) {
    subs[name] = client.request({ query, variables: { name } }).subscribe({
      next: (v) => out({ ev: "next", name, data: v.data?.ticks ?? null, errors: v.errors ?? null }),
      error: (e) => out({ ev: "error", name, message: String(e?.message ?? e) }),
      complete: () => out({ ev: "complete", name }),
    });
  }
  commands((line) => {
    const [op, name] = line.split(" ");
    if (op === "complete" && subs[name]) subs[name].unsubscribe();
  });
}

function sioClient() {
  const { io } = require("socket.io-client");
  const socket = io(arg, { transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 500 });
  let ticks = 0;
  socket.on("connect", () => out({ ev: "connected", recovered: socket.recovered }));
  socket.on("disconnect", (reason) => out({ ev: "disconnect", reason }));
  socket.on("tick", (g) => {
    if (ticks++ % 10 === 0) out({ ev: "tick", data: g });
  });
  let n = 0;
  commands((line) => {
    if (line === "emit") {
      const v = ++n;
      socket.timeout(5000).emit("emit", v, (err, r) => out(err ? { ev: "emit-failed", message: String(err) } : { ev: "emitted", data: r }));
    }
  });
}

function stompClient() {
  const { Client } = require("@stomp/stompjs");
  const client = new Client({
    webSocketFactory: () => new WebSocket(arg, ["v12.stomp", "v11.stomp", "v10.stomp"]),
    reconnectDelay: 0, // a close is the end: tether must not need it
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    // Frames longer than 250 characters go as several messages: a
    // re-send after a broker restart must not start inside one.
    splitLargeFrames: true,
    maxWebSocketChunkSize: 250,
  });
  const subs = {};
  client.onConnect = () => {
    out({ ev: "connected" });
    for (const name of ["a", "b"]) {
      subs[name] = client.subscribe(`/topic/stomp.${name}`, (m) => out({ ev: "message", name, data: m.body }));
    }
  };
  client.onStompError = (f) => out({ ev: "error", message: f.headers.message, data: f.body });
  client.onWebSocketClose = (e) => out({ ev: "closed", code: e.code, reason: e.reason });
  client.activate();
  commands((line) => {
    if (line === "unsubscribe b") {
      client.watchForReceipt("unsub-b", () => out({ ev: "unsubscribed" }));
      subs.b.unsubscribe({ receipt: "unsub-b" });
    }
    if (line === "flow") {
      let sent = 0;
      let acked = 0;
      setInterval(() => {
        if (!client.connected) return;
        const receipt = `c-${++sent}`;
        client.watchForReceipt(receipt, () => {
          if (++acked % 10 === 0) out({ ev: "acked", name: "c", data: String(acked) });
        });
        client.publish({ destination: "/topic/stomp.c", body: `c:${sent}:`.padEnd(4000, "x"), headers: { receipt } });
      }, 250);
    }
  });
}

function stompPub() {
  const { Client } = require("@stomp/stompjs");
  let conn = 0;
  let timer;
  const client = new Client({
    webSocketFactory: () => new WebSocket(arg, ["v12.stomp"]),
    reconnectDelay: 100,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
  });
  client.onConnect = () => {
    conn++;
    out({ ev: "connected", data: String(conn) });
    let i = 0;
    clearInterval(timer);
    timer = setInterval(() => {
      if (!client.connected) return;
      for (const name of ["a", "b"]) client.publish({ destination: `/topic/stomp.${name}`, body: `${name}:${conn}:${i}` });
      i++;
    }, 50);
  };
  client.activate();
  commands(() => {});
}

function mqttClient() {
  const mqtt = require("mqtt");
  const client = mqtt.connect(arg, { protocolVersion: 4, reconnectPeriod: 0, clientId: "tether-test-sub", clean: true });
  client.on("connect", () => {
    out({ ev: "connected" });
    client.subscribe({ a: { qos: 1 }, b: { qos: 0 } }, (err) => out(err ? { ev: "error", message: String(err) } : { ev: "subscribed" }));
  });
  client.on("message", (topic, payload) => out({ ev: "message", name: topic, data: payload.toString() }));
  client.on("close", () => out({ ev: "closed" }));
  client.on("error", (e) => out({ ev: "error", message: String(e) }));
  commands((line) => {
    if (line === "unsubscribe b") client.unsubscribe("b", (err) => out(err ? { ev: "error", message: String(err) } : { ev: "unsubscribed" }));
    if (line === "publish") client.publish("c", "x", { qos: 1 }, (err) => out(err ? { ev: "error", message: String(err) } : { ev: "published" }));
    if (line === "flow") {
      const acked = { c: 0, d: 0 };
      setInterval(() => {
        for (const [name, qos] of [["c", 1], ["d", 2]]) {
          client.publish(name, `${name}:${acked[name]}`, { qos }, (err) => {
            if (err) return out({ ev: "error", message: String(err) });
            if (++acked[name] % 10 === 0) out({ ev: "acked", name, data: String(acked[name]) });
          });
        }
      }, 250);
    }
  });
}

function mqttPub() {
  const mqtt = require("mqtt");
  const client = mqtt.connect(arg, { protocolVersion: 4, reconnectPeriod: 100, clientId: "tether-test-pub", clean: true });
  let conn = 0;
  let i = 0;
  client.on("connect", () => {
    conn++;
    i = 0;
    out({ ev: "connected", data: String(conn) });
  });
  setInterval(() => {
    if (!client.connected) return;
    client.publish("a", `a:${conn}:${i}`, { qos: 1 });
    client.publish("b", `b:${conn}:${i}`, { qos: 2 });
    i++;
  }, 50);
  commands(() => {});
}

function commands(f) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", f);
  rl.on("close", () => process.exit(0));
}

const modes = {
  "gql-server": gqlServer,
  "stws-server": stwsServer,
  "sio-server": sioServer,
  "gql-client": gqlClient,
  "stws-client": stwsClient,
  "sio-client": sioClient,
  "stomp-client": stompClient,
  "stomp-pub": stompPub,
  "mqtt-client": mqttClient,
  "mqtt-pub": mqttPub,
};
if (!modes[mode]) {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
modes[mode]();

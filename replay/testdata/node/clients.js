// Real client libraries driven through a short session against the
// WebSocket server of replay/libraries_test.go, which records what they
// send. Usage: node clients.js <mqtt-4|mqtt-5|stomp|graphql-ws> <url>
// Each session ends when the server closes the connection.
'use strict';
const WebSocket = require('ws');

const [mode, url] = process.argv.slice(2);
const bye = () => process.exit(0);
const fail = (err) => {
  console.error(String(err && err.stack || err));
  process.exit(1);
};

function mqttSession(version) {
  const mqtt = require('mqtt');
  const c = mqtt.connect(url, {
    protocolVersion: version,
    clientId: 'replay-test',
    username: 'alice',
    password: 's3cret',
    keepalive: 60,
    reconnectPeriod: 0,
  });
  c.on('close', bye);
  c.on('error', fail);
  c.on('connect', async () => {
    try {
      await c.subscribeAsync(['sensors/+/temp', 'alerts/#'], { qos: 1 });
      await c.subscribeAsync('chat/room1', { qos: 0 });
      await c.unsubscribeAsync('alerts/#');
      // The server closes on this PUBLISH: the session ends.
      await c.publishAsync('chat/room1', JSON.stringify({ text: 'hi' }), { qos: 1 });
    } catch (err) {
      // the close can reject the publish: not a failure
    }
  });
}

function stompSession() {
  const { Client } = require('@stomp/stompjs');
  const c = new Client({
    webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
    connectHeaders: { login: 'guest', passcode: 'guest' },
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    reconnectDelay: 0,
  });
  c.onWebSocketClose = bye;
  c.onStompError = (f) => fail(f.headers.message);
  c.onConnect = () => {
    const chat = c.subscribe('/topic/chat', () => {});
    c.watchForReceipt('r-1', () => {
      chat.unsubscribe();
      c.publish({ destination: '/app/chat', body: JSON.stringify({ text: 'hi' }) });
      // The server closes on this SEND: the session ends.
      c.publish({ destination: '/app/bye', body: 'bye', headers: { receipt: 'r-2' } });
    });
    c.subscribe('/queue/orders', () => {}, { receipt: 'r-1' });
  };
  c.activate();
}

function graphqlSession() {
  const { createClient } = require('graphql-ws');
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: { authToken: 'secret' },
    retryAttempts: 0,
    on: { closed: bye },
  });
  const sink = { next() {}, error() {}, complete() {} };
  let stop = () => {};
  // The client completes the first subscription on its first result;
  // the server closes on that complete: the session ends.
  stop = client.subscribe({ query: 'subscription { greetings }' }, { ...sink, next: () => stop() });
  client.subscribe(
    { query: 'subscription OnPrice($s: String!) { price(symbol: $s) }', variables: { s: 'ACME' } },
    sink,
  );
}

switch (mode) {
  case 'mqtt-4':
    mqttSession(4);
    break;
  case 'mqtt-5':
    mqttSession(5);
    break;
  case 'stomp':
    stompSession();
    break;
  case 'graphql-ws':
    graphqlSession();
    break;
  default:
    fail('unknown mode ' + mode);
}

// A WebSocket peer built on the `ws` package, driven by tether's interop
// tests (interop/interop_test.go) through JSON lines: commands on stdin,
// events on stdout.
//
//   node peer.js client URL [PROTOCOL...]   connect to URL offering PROTOCOLs
//   node peer.js server [PROTOCOL...]       listen on 127.0.0.1:0; choose the
//                                           first of PROTOCOLs the client offers
//
// Commands: {"op":"send","type":"text"|"binary","size":N,"seed":S,"fragments":F}
// sends generated data (the same generator as gen.py and the Go test) in F
// frames; {"op":"jsonping","id":N} sends {"type":"ping","id":N};
// {"op":"ping","data":D} sends an RFC 6455 ping; {"op":"close","code":C,
// "reason":R} (code 0: a Close without a code); {"op":"stats"};
// {"op":"connect","url":U,"protocols":[...]} (client) opens a new
// connection, which the commands then apply to. EOF on stdin ends the
// process.
//
// Events: listening {port}; open {protocol, extensions, offered};
// message {type, size, sha256, text}; pong {data}; close {code, reason};
// stats {messages, jsonpings, pings}; error {message}.
//
// A text message that is a JSON object with "type":"ping" (at most 4 KiB,
// as tether's JSON heartbeat, README "Heartbeats") is answered with the same object
// with "type":"pong" and counted, not reported. RFC 6455 pings are answered
// by ws itself; they are only counted.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const readline = require('readline');
const WebSocket = require('ws');

const UNIT = Buffer.from('tether ✓ interop 世界 🌍 ', 'utf8');

// gen returns the test payload of size bytes for seed: for text, "#seed|"
// then whole copies of UNIT, padded with "." (valid UTF-8 of exactly size
// bytes); for binary, a byte pattern.
function gen(type, size, seed) {
  const out = Buffer.alloc(size);
  if (type === 'binary') {
    for (let i = 0; i < size; i++) out[i] = (i * 131 + seed * 7 + (i >> 8)) & 0xff;
    return out;
  }
  const head = Buffer.from('#' + seed + '|', 'utf8');
  if (size < head.length) return out.fill('.');
  head.copy(out, 0);
  let off = head.length;
  while (off + UNIT.length <= size) {
    UNIT.copy(out, off);
    off += UNIT.length;
  }
  out.fill('.', off);
  return out;
}

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

const stats = { messages: 0, jsonpings: 0, pings: 0 };
let current = null;

function attach(ws) {
  current = ws;
  ws.on('ping', () => { stats.pings++; });
  ws.on('pong', (data) => emit({ ev: 'pong', data: data.toString('utf8') }));
  ws.on('message', (data, isBinary) => {
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    if (!isBinary && buf.length <= 4096) {
      let obj;
      try { obj = JSON.parse(buf.toString('utf8')); } catch (e) { obj = undefined; }
      if (obj && typeof obj === 'object' && !Array.isArray(obj) && obj.type === 'ping') {
        stats.jsonpings++;
        ws.send(JSON.stringify(Object.assign({}, obj, { type: 'pong' })));
        return;
      }
    }
    stats.messages++;
    emit({
      ev: 'message',
      type: isBinary ? 'binary' : 'text',
      size: buf.length,
      sha256: crypto.createHash('sha256').update(buf).digest('hex'),
      text: !isBinary && buf.length <= 256 ? buf.toString('utf8') : undefined,
    });
  });
  ws.on('close', (code, reason) => {
    emit({ ev: 'close', code, reason: reason.toString('utf8') });
  });
  ws.on('error', (err) => emit({ ev: 'error', message: String(err && err.message) }));
}

function send(cmd) {
  const ws = current;
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    emit({ ev: 'error', message: 'send: not open' });
    return;
  }
  const data = gen(cmd.type, cmd.size, cmd.seed);
  const binary = cmd.type === 'binary';
  const n = Math.max(1, cmd.fragments || 1);
  if (n === 1) {
    ws.send(data, { binary });
    return;
  }
  // Byte boundaries: a text fragment may end inside a UTF-8 sequence,
  // which RFC 6455 allows (only the whole message must be valid).
  const step = Math.ceil(data.length / n);
  for (let i = 0; i < n; i++) {
    const chunk = data.subarray(Math.min(i * step, data.length), Math.min((i + 1) * step, data.length));
    ws.send(chunk, { binary, fin: i === n - 1 });
  }
}

function command(line) {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  switch (cmd.op) {
    case 'send':
      send(cmd);
      break;
    case 'jsonping':
      current.send(JSON.stringify({ type: 'ping', id: cmd.id }));
      break;
    case 'ping':
      current.ping(Buffer.from(cmd.data, 'utf8'));
      break;
    case 'close':
      // Code 0: a Close frame without a code.
      if (current) {
        if (cmd.code) current.close(cmd.code, cmd.reason);
        else current.close();
      }
      break;
    case 'connect':
      connect(cmd.url, cmd.protocols);
      break;
    case 'stats':
      emit(Object.assign({ ev: 'stats' }, stats));
      break;
    default:
      emit({ ev: 'error', message: 'unknown op ' + cmd.op });
  }
}

const [role, ...rest] = process.argv.slice(2);
function connect(url, protocols) {
  // ws offers permessage-deflate by default, as a browser does. For wss,
  // INTEROP_CA names the PEM file of the certificate to trust.
  const opts = {};
  if (process.env.INTEROP_CA) opts.ca = fs.readFileSync(process.env.INTEROP_CA);
  const ws = new WebSocket(url, protocols, opts);
  let extensions = '';
  ws.on('upgrade', (res) => { extensions = res.headers['sec-websocket-extensions'] || ''; });
  ws.on('unexpected-response', (req, res) => {
    emit({ ev: 'error', message: 'unexpected response ' + res.statusCode });
  });
  attach(ws);
  ws.on('open', () => emit({ ev: 'open', protocol: ws.protocol, extensions }));
}

if (role === 'client') {
  const [url, ...protocols] = rest;
  connect(url, protocols);
} else if (role === 'server') {
  // With INTEROP_CERT and INTEROP_KEY (PEM files) it serves wss.
  let listenOpts = { host: '127.0.0.1', port: 0 };
  if (process.env.INTEROP_CERT) {
    const server = https.createServer({
      cert: fs.readFileSync(process.env.INTEROP_CERT),
      key: fs.readFileSync(process.env.INTEROP_KEY),
    });
    server.listen(0, '127.0.0.1');
    listenOpts = { server };
  }
  const wss = new WebSocket.WebSocketServer({
    ...listenOpts,
    maxPayload: 16 << 20,
    handleProtocols: (offered) => {
      for (const p of rest) if (offered.has(p)) return p;
      return false;
    },
  });
  wss.on('listening', () => emit({ ev: 'listening', port: wss.address().port }));
  wss.on('connection', (ws, req) => {
    attach(ws);
    emit({
      ev: 'open',
      protocol: ws.protocol,
      extensions: req.headers['sec-websocket-extensions'] || '',
      offered: req.headers['sec-websocket-protocol'] || '',
    });
  });
} else {
  process.stderr.write('usage: peer.js client URL [PROTOCOL...] | server [PROTOCOL...]\n');
  process.exit(2);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', command);
rl.on('close', () => process.exit(0));

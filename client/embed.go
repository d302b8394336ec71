// Package client holds tether's browser client and demo page as static
// files, embedded in the binary so `tether demo` needs nothing on disk.
//
// The files are:
//
//   - tether.js: a dependency-free ES module wrapping the browser WebSocket
//     (heartbeats per README "Heartbeats", reconnects and upstream status per README "Upstream loss, reconnect and the delivery guarantee");
//   - tether.d.ts: its TypeScript declarations;
//   - demo.html, demo.css, demo.js: the demo page that `tether demo` serves.
//
// The package has no Go logic; its tests run the client's unit tests with
// Node (node --test).
package client

import "embed"

// Files holds tether.js, tether.d.ts and the demo page (demo.html,
// demo.css, demo.js) at the root of the file system. It is read-only and
// safe for concurrent use.
//
//go:embed tether.js tether.d.ts demo.html demo.css demo.js
var Files embed.FS

// Package interop holds tests only: they run tether in-process between
// WebSocket peers nobody on this project wrote (Node's ws, Python's
// websockets, headless Chromium) and check README "Running in front of a real
// backend" and "Heartbeats" and "Close codes" end to end with them in both
// roles. The peers are scripts in node/ and python/, driven over stdin/stdout
// JSON lines. A test whose peer is missing skips, except under CI=true, where
// it fails.
package interop

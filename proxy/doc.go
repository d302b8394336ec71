// Package proxy is tether's client-facing side (README "Running in front of a
// real backend" and "Close codes" and "Metrics and logs"): it checks each
// WebSocket handshake, dials the upstream before accepting the client's
// upgrade (so upstream failures become HTTP statuses), forwards headers, path
// and query, registers sessions for TETHER_MAX_SESSIONS and the drain on
// shutdown, and exports Prometheus metrics from its own registry.
//
// A Server is safe for concurrent use. ServeHTTP completes the handshake,
// starts the session on a goroutine of its own (its Run reads the client
// leg) and returns, so net/http's per-connection state is freed; the
// session registry, not net/http, tracks sessions for
// TETHER_MAX_SESSIONS and for Shutdown, which drains them.
package proxy

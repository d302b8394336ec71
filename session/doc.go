// Package session relays one client WebSocket leg to a replaceable
// upstream leg (SPEC §2–§5): it frames and validates messages, answers
// and sends heartbeats on both legs, classifies how a leg ended into the
// close codes of SPEC §5, and, when the upstream leg is lost, reconnects
// with full-jitter backoff while the client leg stays open and the client's
// messages wait in a bounded queue.
//
// # Goroutines
//
// A connected, idle session has two parked goroutines: Run, which reads the
// client leg, and one read loop for the current upstream connection. There
// is no writer goroutine: the reader of one leg writes each message straight
// into the other leg under that leg's write lock, which is held for one
// frame write (bounded by TETHER_WRITE_TIMEOUT) and never across anything
// else, so a slow peer slows reading on the other side (backpressure) and
// nothing queues in memory. Pongs and heartbeat pings that another goroutine
// wants written are left as flags and written by whoever holds or next takes
// the lock, so a pong waits at most one frame write. The reconnect loop
// exists only while reconnecting. Heartbeat timers are runtime timers
// (time.AfterFunc); their callbacks run only when they fire.
//
// # Heartbeat timers
//
// Liveness needs no timer of its own: every socket read of a leg is
// preceded by SetReadDeadline(now + TIMEOUT), so any byte received, even the
// middle of a large frame, keeps the leg alive, and a silent peer surfaces
// as os.ErrDeadlineExceeded in the leg's read loop. Pings come from one
// time.AfterFunc per leg that re-arms itself; 100k idle sessions cost 200k
// runtime timers in the Go scheduler's timer heaps and no goroutines.
//
// # State and ownership
//
// Session.mu guards the state machine (connected → reconnecting →
// connected, or closed), the current upstream leg and its generation, and
// the queue of client messages (retained until a heartbeat round trip that
// started after them completes, or buffered while reconnecting). upstreamLost
// is the only place a reconnect starts, and it ignores reports about a
// connection that is no longer current (generation check), so at most one
// reconnect loop and one dial exist per session. end is the only place a
// session ends; it runs once.
package session

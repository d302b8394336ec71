// Package session relays one client WebSocket leg to a replaceable
// upstream leg (README "Heartbeats", "Upstream loss, reconnect and the
// delivery guarantee" and "Close codes"): it frames and validates
// messages, answers and sends heartbeats on both legs, classifies how a
// leg ended into close codes, and, when the upstream leg is lost,
// reconnects with full-jitter backoff while the client leg stays open and
// the client's messages wait in a bounded log.
//
// # Parts
//
// Session (session.go) is the state machine and wires the parts: the two
// legs (leg), the delivery log of client messages on their way to the
// upstream (deliveryLog, log.go), the replay opening (replayOpening,
// log.go) and, during an outage, the reconnect loop (reconnect.go). Both
// legs run the same read loop (relay.go); the direction is a value (the
// leg's generation: 0 for the client leg), and one classification
// (classify, outcome.go) tells how either leg ended. A session's end is a
// typed Outcome (cause, error, the Close each leg got), told to the one
// end callback given to Start, at Ending and at Finished.
//
// A leg (leg.go) keeps its state in three parts, each with one owner:
// legReadState (leg_read.go), owned by its read loop; legWriteState
// (leg_write.go), under its write lock; legParkState (leg_park.go),
// atomics and ctl, shared by the read loop, the poller, the heartbeat
// timer and the writers.
//
// One client message: legReader.Read and frameReader.next (leg_read.go)
// read it; readLoop hands it to toUpstream, whose admit numbers it and
// keeps a copy in the delivery log while the upstream heartbeat is on
// (relay.go); writeData writes it to the upstream (leg_write.go).
//
// # Goroutines
//
// An idle session has no goroutine. Each leg has a read loop that runs on
// a goroutine only while the leg is busy: a leg quiet for Env.IdleAfter
// (250 ms) at a message boundary parks (see leg): its loop returns, its
// read buffer goes back to a pool, and the process's poller
// (internal/netpoll, one goroutine for all parked sockets) waits for the
// socket; readiness, a Close to send, a failed write or the heartbeat
// timeout starts the loop again on a worker goroutine (workers.go: one
// that ran a loop before and keeps its grown stack). Whether a running leg
// has been quiet for IdleAfter or its heartbeat timeout is the sweeper's
// question (sweep.go: one timer per Env, set only while some leg that can
// park runs), not a read deadline's. A leg woken by control
// frames only (pongs, pings, JSON heartbeats) parks again as soon as its
// socket has nothing more. A woken leg reads with a 512-byte buffer and
// takes 4, 16, then 32 KiB, while its reads fill the buffer. Legs without
// a file descriptor (TLS, net.Pipe) and legs with heartbeats under 1 s
// keep a goroutine blocked in their read, with a 4 KiB buffer. Start
// returns at once; Run waits.
//
// There is no writer goroutine: the reader of one leg writes each message
// straight into the other leg under that leg's write lock, which is held
// for one write (bounded by TETHER_WRITE_TIMEOUT) and never across
// anything else, so a slow peer slows reading on the other side
// (backpressure) and nothing queues in memory. When the reader already has
// the next frame's bytes buffered, a small message may wait in the other
// leg's write buffer (at most 16 KiB) to go out with the next ones in one
// write; the reader flushes it before it next reads its socket. Pongs and
// heartbeat pings that another goroutine wants written are left as flags
// and written by whoever holds or next takes the lock, so a pong waits at
// most one write. The reconnect loop exists only while reconnecting.
//
// # Heartbeat timers
//
// A running leg reads under a read deadline TIMEOUT after its last bytes
// (kept across reads while busy, see armRead), so any byte received, even
// the middle of a large frame, keeps the leg alive, and a silent peer
// surfaces as os.ErrDeadlineExceeded in the leg's read loop.
// A parked leg has no read in progress: its heartbeat timer (one
// time.AfterFunc per leg, which also sends its pings) fires by the time
// its last received byte is TIMEOUT old and wakes it with that error.
// 100k idle sessions cost 200k runtime timers and no goroutines.
//
// # State and ownership
//
// Session.mu guards the state machine (connected → reconnecting →
// connected, or closed), the current upstream leg and its generation, and
// the delivery log (messages retained until a heartbeat round trip that
// started after them completes, or buffered while reconnecting). No helper
// named *Locked releases mu; the one that waits on the session's cond says
// so in its name (waitForWindow). upstreamLost is the only place a
// reconnect starts, and it ignores reports about a connection that is no
// longer current (generation check), so at most one reconnect loop and
// one dial exist per session. end is the only place a session ends; it
// runs once.
package session

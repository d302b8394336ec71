// Package heartbeat holds the heartbeat logic of one tether leg (README
// "Heartbeats"): the heartbeat [Mode] and per-leg [Config], the JSON ping/pong
// classifier and pong builder ([Messages]), and the bookkeeping that pairs
// pongs with tether's own pings for round-trip times and delivery
// acknowledgement ([Tracker], README "Upstream loss, reconnect and the
// delivery guarantee" "provably received").
//
// The package is pure logic: it does no I/O, no logging and starts no
// goroutines. The session package owns the timers, with this design:
//
//   - Liveness is a read deadline. Before every socket read a leg calls
//     SetReadDeadline(now + Timeout), so any received byte, even of a frame
//     still arriving, counts as life, and no goroutine or extra timer
//     exists for it. Expiry surfaces as os.ErrDeadlineExceeded.
//   - Pings come from one runtime timer per leg (time.AfterFunc). Its
//     callback only tries the leg's write lock; when the lock is busy it
//     leaves a flag that the current holder checks before releasing it,
//     and the holder sends the ping. An idle session therefore has no
//     goroutine just for timing, and nothing busy-loops.
package heartbeat

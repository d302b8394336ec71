package session

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// pending control work, left by a goroutine that could not take the write
// lock for the goroutine that holds it.
const (
	pendPong     uint32 = 1 << iota // RFC pong with the latest ping payload
	pendJSONPong                    // JSON pong
	pendPingWS                      // RFC ping
	pendPingJSON                    // JSON ping
)

var errLegClosed = errors.New("leg closed")

// ctlBufs holds the payload of a control frame being written (masked in
// place), taken only for that write.
var ctlBufs = sync.Pool{New: func() any { return new([125]byte) }}

// writeLock is a leg's write lock: uncontended, one atomic add to take it
// and one to release it (a channel used as the lock took the channel's
// runtime lock twice each way: 3.9 % of tether's CPU at 1 KiB messages).
// Contended, a goroutine waits on a channel receive, which, unlike a
// sync.Mutex, blocks durably under testing/synctest: tests that stall a
// write keep their fake clock. n counts the holder and the waiters;
// release hands the lock to one waiter through a channel made at the
// first contention (most legs never make one).
type writeLock struct {
	n  atomic.Int32
	ch atomic.Pointer[chan struct{}] // capacity 1; made at the first wait
}

func (w *writeLock) lock() {
	if w.n.Add(1) != 1 {
		<-w.handoff()
	}
}

func (w *writeLock) tryLock() bool { return w.n.CompareAndSwap(0, 1) }

func (w *writeLock) release() {
	if w.n.Add(-1) != 0 {
		w.handoff() <- struct{}{}
	}
}

// handoff is the channel a release hands the lock over, made by whichever
// of a waiter and the holder needs it first.
func (w *writeLock) handoff() chan struct{} {
	if c := w.ch.Load(); c != nil {
		return *c
	}
	c := make(chan struct{}, 1)
	if w.ch.CompareAndSwap(nil, &c) {
		return c
	}
	return *w.ch.Load()
}

func (l *leg) lock() { l.wlock.lock() }

func (l *leg) tryLock() bool { return l.wlock.tryLock() }

// lockTimeout takes the write lock within d, polling: only a Close to send
// waits this way, and it must not queue for a lock it may give up on.
func (l *leg) lockTimeout(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !l.tryLock() {
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// unlock writes the control frames other goroutines left in pending, then
// releases the lock. A flag set after the last check is picked up by the
// goroutine that set it (its tryLock succeeds) or by the next holder.
func (l *leg) unlock() {
	for {
		if l.pending.Load() != 0 {
			l.flushControlLocked()
		}
		err := l.werr
		l.wlock.release()
		if err != nil {
			l.fail(err)
			return
		}
		if l.pending.Load() == 0 || !l.tryLock() {
			return
		}
	}
}

// signal asks for control work to be done as soon as the write lock is
// free, without waiting for it.
func (l *leg) signal(flags uint32) {
	l.pending.Or(flags)
	if l.tryLock() {
		l.unlock()
	}
}

// fail tears the leg down after a write error: it records why and closes
// the connection, so that the leg's read loop (the only goroutine that
// decides about a leg) returns and handles it. Safe from any goroutine.
func (l *leg) fail(err error) {
	if l.failed.CompareAndSwap(nil, &err) {
		l.closeConn()
	}
}

// failure returns the error recorded by fail, or nil.
func (l *leg) failure() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// writeFrameLocked writes one final frame. The caller holds the lock;
// p is left as it is (see writeFrameRSV).
func (l *leg) writeFrameLocked(op ws.OpCode, p []byte, deadline time.Duration) error {
	return l.writeFrameRSV(op, false, p, deadline, false, maskKey{})
}

// writeScratchLocked is writeFrameLocked for a payload the caller owns
// and is done with once it is written (a pooled control payload): a
// masked leg masks it in place.
func (l *leg) writeScratchLocked(op ws.OpCode, p []byte) error {
	return l.writeFrameRSV(op, false, p, l.wt, true, maskKey{})
}

// maskKey is the masking key a client message's payload still carries:
// tether forwards a client's binary message as the client masked it,
// under the client's own key (unpredictable, as RFC 6455 §5.3 asks of a
// browser's), instead of unmasking it on read and masking it again on
// write (README "Performance"). The zero value is plaintext.
type maskKey struct {
	key [4]byte
	set bool
}

// unmask makes p plaintext, once: later calls do nothing.
func (k *maskKey) unmask(p []byte) {
	if k.set {
		ws.Cipher(p, k.key, 0)
		k.set = false
	}
}

// writeFrameRSV writes one final frame with RSV1 as given. It never
// modifies bytes the caller keeps: a masked leg masks p in place only
// with consume (the caller is done with p once it is written: forward's
// read buffer, a scratch payload), restoring it if the write fails so the
// caller can hold it for another connection; otherwise it masks a pooled
// copy. Bytes the caller keeps may be shared with another goroutine (a
// delivery log's message that the reconnect re-sends while a write to
// the lost connection still runs, the process's JSON ping): masking
// them in place, even restoring them after, would let another writer
// send them half masked.
//
// A payload masked already (mk set; the upstream leg only) is written as
// it is, under its key, and never modified.
func (l *leg) writeFrameRSV(op ws.OpCode, rsv1 bool, p []byte, deadline time.Duration, consume bool, mk maskKey) error {
	if l.werr != nil {
		return l.werr
	}
	small := len(p) <= coalesceBuf/4
	if len(l.wbuf) > 0 || (small && l.raw == nil) {
		// Frames are pending: this one goes after them, in the same
		// write when it is small enough to copy. A connection not
		// written raw (TLS, a pipe) takes one write per slice, and
		// TLS makes each a record: a small frame's header and payload
		// go in one.
		if small && len(l.wbuf)+len(p)+14 <= coalesceBuf {
			l.appendFrameKey(op, rsv1, p, mk)
			return l.flushLocked(deadline)
		}
		if err := l.flushLocked(deadline); err != nil {
			return err
		}
	}
	key := mk.key
	inPlace := l.mask && !mk.set
	var box *[]byte
	if inPlace {
		if !consume {
			p, box = getBuf(p)
		}
		key = newMaskKey()
		ws.Cipher(p, key, 0)
	}
	l.bufArr[0] = putHeader(&l.hdr, op, rsv1, len(p), l.mask, key)
	l.bufArr[1] = p
	l.armWrite(deadline)
	err := l.writeBufs()
	switch {
	case inPlace && !consume:
		putBuf(box, p) // the copy
	case inPlace && err != nil:
		ws.Cipher(p, key, 0) // restore the caller's bytes
	}
	if err != nil {
		l.werr = err
	}
	return err
}

// newMaskKey returns a fresh masking key for a frame tether sends as a
// client (RFC 6455 §5.3).
func newMaskKey() [4]byte {
	k := rand.Uint32()
	return [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
}

// coalesceBuf is the buffer for frames held back for one write: data
// messages of up to a quarter of it are copied in, and it is written when
// the next would not fit or the read loop has nothing more buffered.
// Larger messages are written on their own, from where they are, without
// a copy. Measured against half of 32 KiB before (README "Performance",
// messages of 4 to 16 KiB): 8 KiB messages 2.6x and 16 KiB 1.7x the
// messages per CPU second; 1, 4, 32 and 64 KiB unchanged.
const coalesceBuf = 64 << 10

// appendFrameLocked appends one final frame to wbuf, masking the copy.
func (l *leg) appendFrameLocked(op ws.OpCode, rsv1 bool, p []byte) {
	l.appendFrameKey(op, rsv1, p, maskKey{})
}

// appendFrameKey is appendFrameLocked for a payload that may be masked
// already (mk set): it is copied as it is, under its key.
func (l *leg) appendFrameKey(op ws.OpCode, rsv1 bool, p []byte, mk maskKey) {
	if l.wbuf == nil {
		l.wbuf, l.wbox = takeBuf(coalesceBuf)
		l.wbuf = l.wbuf[:0]
	}
	key := mk.key
	fresh := l.mask && !mk.set
	if fresh {
		key = newMaskKey()
	}
	l.wbuf = append(l.wbuf, putHeader(&l.hdr, op, rsv1, len(p), l.mask, key)...)
	n := len(l.wbuf)
	l.wbuf = append(l.wbuf, p...)
	if fresh {
		ws.Cipher(l.wbuf[n:], key, 0)
	}
}

// armWrite makes a write that starts now fail once blocked for d, and at
// most d/4 later than that (README "Configuration", TETHER_WRITE_TIMEOUT).
// Setting a deadline modifies a runtime timer under a lock; a leg that
// writes often keeps the one it set until less than d is left of it, so
// it sets one per d/4 at most, not one per write.
func (l *leg) armWrite(d time.Duration) {
	now := time.Now().UnixNano()
	if l.wdl >= now+int64(d) && l.wdl <= now+int64(d)+int64(d/4) {
		return
	}
	l.wdl = now + int64(d) + int64(d/4)
	_ = l.conn.SetWriteDeadline(time.Unix(0, l.wdl))
}

// flushLocked writes the pending frames in one write and gives the
// buffer back.
func (l *leg) flushLocked(deadline time.Duration) error {
	if len(l.wbuf) == 0 {
		return l.werr
	}
	var err error
	if l.werr == nil {
		l.armWrite(deadline)
		l.bufArr[0] = l.wbuf
		if err = l.writeBufs(); err != nil {
			l.werr = err
		}
	}
	putBuf(l.wbox, l.wbuf)
	l.wbuf, l.wbox = nil, nil
	if err == nil {
		err = l.werr
	}
	return err
}

// deferFlush records that l's read loop left frames pending on t.
func (l *leg) deferFlush(t *leg) {
	if l.flushTo != nil && l.flushTo != t {
		l.flushTo.flushPending()
	}
	l.flushTo = t
}

// flushDeferred flushes what l's read loop left pending; the loop calls it
// when it returns.
func (l *leg) flushDeferred() {
	if t := l.flushTo; t != nil {
		l.flushTo = nil
		t.flushPending()
	}
}

// flushPending writes the frames another leg's read loop left pending.
func (l *leg) flushPending() {
	l.lock()
	_ = l.flushLocked(l.wt)
	l.unlock()
}

// writeData writes one data message. seq is the session sequence number
// of a client message (used for acknowledgement) or 0 for upstream
// messages. It blocks while another frame is being written. With more
// set (the caller's read loop has more input buffered), a small message
// may be held back to go out with the next ones in one write; the caller
// must then call from.deferFlush(l), and its loop flushes before it next
// reads its socket.
func (l *leg) writeData(op ws.OpCode, p []byte, seq uint64, more bool) error {
	return l.writeDataRSV(op, p, seq, more, false, maskKey{})
}

// writeLogged writes a message of a delivery log, masked or not (mk).
// Its bytes are left as they are (writeFrameRSV).
func (l *leg) writeLogged(op ws.OpCode, p []byte, seq uint64, mk maskKey) error {
	return l.writeDataRSV(op, p, seq, false, false, mk)
}

// writeDataConsumed is writeData for a payload the caller is done with
// once it is written (writeFrameRSV's consume): after a successful write
// p may be left masked. After a failed one it is as it was. mk is the
// client's key when p is still masked with it.
func (l *leg) writeDataConsumed(op ws.OpCode, p []byte, seq uint64, more bool, mk maskKey) error {
	return l.writeDataRSV(op, p, seq, more, true, mk)
}

func (l *leg) writeDataRSV(op ws.OpCode, p []byte, seq uint64, more, consume bool, mk maskKey) error {
	l.lock()
	var err error
	switch {
	case l.closed:
		err = errLegClosed
	case more && !l.deflate && l.werr == nil && len(p) <= coalesceBuf/4:
		// Held back for one write with the frames around it; a full
		// buffer goes out first.
		if len(l.wbuf)+len(p)+14 > coalesceBuf {
			err = l.flushLocked(l.wt)
		}
		if err == nil {
			l.appendFrameKey(op, false, p, mk)
		}
	case l.deflate && len(p) >= minDeflate:
		var z []byte
		if l.zbuf == nil {
			l.zbuf = new(bytes.Buffer)
		}
		if z, err = deflate(l.zbuf, p); err == nil {
			err = l.writeFrameRSV(op, true, z, l.wt, true, maskKey{}) // z is scratch
		}
		if l.zbuf.Cap() > 64<<10 {
			l.zbuf = nil
		}
	default:
		err = l.writeFrameRSV(op, false, p, l.wt, consume, mk)
	}
	if err == nil && seq >= l.ackMark {
		l.ackMark = seq + 1
	}
	l.unlock()
	return err
}

// deferPing appends an RFC ping, acknowledging everything written so far,
// to the frames pending on l, so that it goes out in the same write as
// them; with none pending it is an earlyPing. The caller defers the flush
// as for data (deferFlush).
func (l *leg) deferPing() {
	l.lock()
	if l.closed || l.werr != nil || len(l.wbuf) == 0 || len(l.wbuf)+14+8 > coalesceBuf {
		l.unlock()
		l.earlyPing()
		return
	}
	l.ctl.Lock()
	id := l.tracker.SentWS(time.Now(), l.ackMark)
	l.ctl.Unlock()
	l.appendFrameLocked(ws.OpPing, false, id[:])
	l.unlock()
	l.s.pingSent(l)
}

// flushControlLocked writes the pending control frames. Pongs go first:
// they answer the peer; pings after. Two or more go in one write (a
// `both` leg's RFC and JSON pings every interval, a pong and a ping):
// appended to the frames pending, if any, and written once.
func (l *leg) flushControlLocked() {
	f := l.pending.Swap(0)
	if l.werr != nil || l.closed {
		return
	}
	s := l.s
	one := f&(f-1) == 0
	// put writes one control frame, or appends it when several go (as
	// writeFrameRSV coalesces: a payload small enough to copy, into a
	// buffer written first when it would overflow); scratch: p is a
	// pooled buffer the write may mask in place.
	put := func(op ws.OpCode, p []byte, scratch bool) error {
		switch {
		case !one && len(p) <= coalesceBuf/4:
			if len(l.wbuf)+len(p)+14 > coalesceBuf {
				if err := l.flushLocked(l.wt); err != nil {
					return err
				}
			}
			l.appendFrameLocked(op, false, p)
			return nil
		case scratch:
			return l.writeScratchLocked(op, p)
		default:
			return l.writeFrameLocked(op, p, l.wt)
		}
	}
	pinged := 0
	if f&pendPong != 0 {
		l.ctl.Lock()
		buf := ctlBufs.Get().(*[125]byte)
		n := copy(buf[:], l.pong)
		l.ctl.Unlock()
		err := put(ws.OpPong, buf[:n], true)
		ctlBufs.Put(buf)
		if err != nil {
			return
		}
	}
	if f&pendJSONPong != 0 {
		l.ctl.Lock()
		p, box := l.jsonPong, l.jsonBox
		l.jsonPong, l.jsonBox = nil, nil
		l.ctl.Unlock()
		if p != nil {
			err := put(ws.OpText, p, true)
			putBuf(box, p)
			if err != nil {
				return
			}
		}
	}
	if f&pendPingWS != 0 {
		l.ctl.Lock()
		id := l.tracker.SentWS(time.Now(), l.ackMark)
		l.ctl.Unlock()
		buf := ctlBufs.Get().(*[125]byte)
		n := copy(buf[:], id[:])
		err := put(ws.OpPing, buf[:n], true)
		ctlBufs.Put(buf)
		if err != nil {
			return
		}
		pinged++
	}
	if f&pendPingJSON != 0 {
		l.ctl.Lock()
		l.tracker.SentJSON(time.Now(), l.ackMark)
		l.ctl.Unlock()
		// The process's shared bytes: neither a write nor an append
		// changes them.
		if err := put(ws.OpText, s.env.Messages.Ping(), false); err != nil {
			return
		}
		pinged++
	}
	if !one && l.flushLocked(l.wt) != nil {
		return
	}
	for range pinged {
		s.pingSent(l)
	}
}

// queuePong records the latest RFC ping payload to answer (RFC 6455
// §5.5.3: only the latest needs an answer, so a ping flood costs nothing).
func (l *leg) queuePong(p []byte) {
	l.ctl.Lock()
	if l.pong == nil && len(p) > 0 {
		l.pong = make([]byte, 0, 125) // once per leg: most legs never get a ping
	}
	l.pong = append(l.pong[:0], p...)
	l.ctl.Unlock()
	l.signal(pendPong)
}

// queueJSONPong records the JSON pong answering ping (latest wins), in a
// pooled buffer that the writer returns once it has written it.
func (l *leg) queueJSONPong(ping []byte) {
	m := l.s.env.Messages
	buf, box := takeBuf(len(ping) + len(m.Pong()) + 16) // room for the echoed members
	pong := m.AppendPong(buf[:0], ping)
	l.ctl.Lock()
	old, oldBox := l.jsonPong, l.jsonBox
	l.jsonPong, l.jsonBox = pong, box
	l.ctl.Unlock()
	putBuf(oldBox, old) // a pong not yet written is replaced, never sent
	l.signal(pendJSONPong)
}

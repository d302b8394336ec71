package session

import (
	"io"
	"time"
)

// linger ends l's connection after tether's Close without resetting it
// (RFC 6455 §7.1.1; nginx's lingering_close): it half-closes, so that the
// peer reads the Close and then EOF, discards whatever the peer still
// sends until it closes its side or wait passes, and only then closes.
// Closing a socket that holds unread bytes makes the kernel send a reset
// instead, and a peer still writing (most of a message over
// MAX_MESSAGE_BYTES is never read) then loses the Close: Node's ws
// reported 1006 instead of 1009. Only the leg's read loop may call it: it
// reads the connection.
func (l *leg) linger(wait time.Duration) {
	defer l.conn.Close()
	cw, ok := l.conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if l.conn.SetReadDeadline(time.Now().Add(wait)) != nil {
		return
	}
	_, _ = io.Copy(io.Discard, l.conn)
}

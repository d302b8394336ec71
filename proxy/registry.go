package proxy

import (
	"time"

	"github.com/tether-proxy/tether/session"
)

// entry is one registered session: a slot from the handshake on, then,
// once its session runs, an element of the registry's list.
type entry struct {
	released bool             // its slot is free (under Server.mu)
	sess     *session.Session // nil while handshaking
	// seq orders running sessions by start (1, 2, …; 0 while
	// handshaking) and is the position a /sessions cursor names.
	seq        uint64
	started    int64  // unix nano (8 bytes where a time.Time takes 24)
	prev, next *entry // the registry's list, oldest first
}

// registry holds the sessions of a Server, under Server.mu: a count of
// slots taken (handshakes included) and a doubly linked list of running
// sessions in start order. Starting or ending a session is O(1); listing
// walks the list from its newest end, so the sessions of a page are
// found without sorting (README "Admin endpoints").
type registry struct {
	n          int // registered entries, handshakes included
	linked     int // entries in the list: running sessions
	head, tail *entry
	seq        uint64
}

// link appends e, which has just started, as the newest session.
func (r *registry) link(e *entry, now time.Time) {
	r.seq++
	e.seq, e.started = r.seq, now.UnixNano()
	e.prev = r.tail
	if r.tail != nil {
		r.tail.next = e
	} else {
		r.head = e
	}
	r.tail = e
	r.linked++
}

// unlink removes e if it is in the list.
func (r *registry) unlink(e *entry) {
	if e.seq == 0 {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		r.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		r.tail = e.prev
	}
	e.prev, e.next, e.seq = nil, nil, 0
	r.linked--
}

// count is the number of running sessions.
func (r *registry) count() int { return r.linked }

// running is a session found in the registry, to be looked at once
// Server.mu is released.
type running struct {
	sess    *session.Session
	seq     uint64
	started time.Time
}

// page returns up to limit running sessions, newest first, that started
// before the one numbered before (0: from the newest), and whether more
// follow.
func (r *registry) page(before uint64, limit int) (out []running, more bool) {
	for e := r.tail; e != nil; e = e.prev {
		if before != 0 && e.seq >= before {
			continue
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, running{e.sess, e.seq, time.Unix(0, e.started)})
	}
	return out, false
}

// find returns the running session with that id.
func (r *registry) find(id string) (running, bool) {
	for e := r.tail; e != nil; e = e.prev {
		if e.sess.ID() == id {
			return running{e.sess, e.seq, time.Unix(0, e.started)}, true
		}
	}
	return running{}, false
}

// all returns every running session.
func (r *registry) all() []*session.Session {
	out := make([]*session.Session, 0, r.linked)
	for e := r.head; e != nil; e = e.next {
		out = append(out, e.sess)
	}
	return out
}

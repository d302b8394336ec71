// Package resume holds the parts of client session resume (README "Client
// session resume") that need no session: resume tokens, the table that
// finds a session by its token, and the handshake's query parameters.
//
// A token is a bearer secret. It is never logged and never stored: the
// table keys sessions by the token's SHA-256, so a lookup compares digests
// (timing reveals nothing about the token) and a dump of the table reveals
// no token. Tokens are single-use: a resume that wins Swap retires its
// token and issues the next.
package resume

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
)

// TokenBytes is the randomness in a token: 144 bits, at least the 128
// the README promises.
const TokenBytes = 18

// Key is what the table stores of a token.
type Key [sha256.Size]byte

// NewToken returns a fresh token (URL-safe base64 of TokenBytes from the
// operating system's CSPRNG, 24 characters) and its key.
func NewToken() (string, Key) {
	var b [TokenBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	t := base64.RawURLEncoding.EncodeToString(b[:])
	return t, KeyOf(t)
}

// KeyOf returns the key of a token as a client presents it.
func KeyOf(token string) Key { return sha256.Sum256([]byte(token)) }

// Table maps live tokens to their sessions. Safe for concurrent use. A
// lookup that finds nothing costs a digest and a map read, and keeps
// nothing: a flood of guessed tokens uses no memory.
type Table[S any] struct {
	mu sync.Mutex
	m  map[Key]entry[S]
}

type entry[S any] struct {
	key Key
	s   S
}

// Put makes key find s.
func (t *Table[S]) Put(key Key, s S) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[Key]entry[S])
	}
	t.m[key] = entry[S]{key: key, s: s}
	t.mu.Unlock()
}

// Lookup finds the session of token without using the token up: the
// caller checks the rest of the resume (Origin, ack) and then calls Swap,
// which only one of several concurrent resumes with the same token wins.
func (t *Table[S]) Lookup(token string) (s S, key Key, ok bool) {
	k := KeyOf(token)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, found := t.m[k]
	// The map already compared digests; comparing them again in constant
	// time keeps that property whatever the map's implementation does.
	if !found || subtle.ConstantTimeCompare(e.key[:], k[:]) != 1 {
		return s, key, false
	}
	return e.s, k, true
}

// Swap retires old and makes next find s, if old is still live; it
// reports whether it was (the winner of a race between resumes with the
// same token).
func (t *Table[S]) Swap(old, next Key, s S) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[old]; !ok {
		return false
	}
	delete(t.m, old)
	t.m[next] = entry[S]{key: next, s: s}
	return true
}

// Delete removes key (a session that ended, or one whose token was
// replaced), if present.
func (t *Table[S]) Delete(key Key) {
	t.mu.Lock()
	delete(t.m, key)
	t.mu.Unlock()
}

// Len reports how many tokens are live.
func (t *Table[S]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

package heartbeat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// MaxHeartbeatSize is the largest text message, in bytes, that can be a
// JSON heartbeat (README "Heartbeats": 4 KiB).
const MaxHeartbeatSize = 4096

// Kind is what Classify finds a text message to be.
type Kind uint8

// The kinds of text message.
const (
	KindData Kind = iota // an ordinary message, to be forwarded
	KindPing             // a JSON ping
	KindPong             // a JSON pong
)

// String returns "data", "ping" or "pong".
func (k Kind) String() string {
	switch k {
	case KindData:
		return "data"
	case KindPing:
		return "ping"
	case KindPong:
		return "pong"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Messages recognises and builds JSON heartbeats (README "Heartbeats") for the
// configured TETHER_PING_MESSAGE and TETHER_PONG_MESSAGE. It is immutable
// after NewMessages and safe for concurrent use.
type Messages struct {
	ping, pong []byte
	pingType   string // the decoded "type" of ping
	pongType   string // the decoded "type" of pong
	pongRaw    []byte // pong's "type" member value as written
	pingExtra  bool   // ping has members other than "type"
	pongExtra  bool   // pong has members other than "type"

	// Prefilter: a heartbeat contains one of these byte strings (the
	// quoted ping and pong types, as configured and as JSON encoders
	// write them).
	pats [][]byte
	lead int // the byte after '"' in every pattern, or -1
}

// NewMessages checks ping and pong and returns their Messages. Each must be
// a JSON object of at most MaxHeartbeatSize bytes with exactly one "type"
// member, a non-empty string, and the two types must differ. Error messages
// begin with "TETHER_PING_MESSAGE: " or "TETHER_PONG_MESSAGE: ".
func NewMessages(ping, pong string) (*Messages, error) {
	m := &Messages{ping: []byte(ping), pong: []byte(pong)}
	pingRaw, err := typeOf(m.ping)
	if err != nil {
		return nil, fmt.Errorf("TETHER_PING_MESSAGE: %w", err)
	}
	pongRaw, err := typeOf(m.pong)
	if err != nil {
		return nil, fmt.Errorf("TETHER_PONG_MESSAGE: %w", err)
	}
	// typeOf validated both strings, so they decode.
	_ = json.Unmarshal(pingRaw, &m.pingType)
	_ = json.Unmarshal(pongRaw, &m.pongType)
	if m.pingType == m.pongType {
		return nil, fmt.Errorf("TETHER_PONG_MESSAGE: \"type\" must differ from the ping's (%q)", m.pingType)
	}
	m.pongRaw = pongRaw
	m.pingExtra, m.pongExtra = hasExtra(m.ping), hasExtra(m.pong)
	m.pats = append(patterns(pingRaw, m.pingType), patterns(pongRaw, m.pongType)...)
	m.lead = int(m.pats[0][1])
	for _, pat := range m.pats {
		if int(pat[1]) != m.lead {
			m.lead = -1
		}
	}
	return m, nil
}

// typeOf checks a configured heartbeat and returns the raw value of its
// "type" member.
func typeOf(msg []byte) ([]byte, error) {
	if len(msg) > MaxHeartbeatSize {
		return nil, fmt.Errorf("must be at most %d bytes, got %d", MaxHeartbeatSize, len(msg))
	}
	var typ []byte
	it := newMembers(msg)
	for {
		key, val, ok := it.next()
		if !ok {
			break
		}
		if !stringEqual(key, "type") {
			continue
		}
		if typ != nil {
			return nil, errors.New(`"type" appears more than once`)
		}
		typ = val
	}
	switch {
	case !it.valid():
		return nil, errors.New("must be a JSON object")
	case typ == nil:
		return nil, errors.New(`must have a "type" member`)
	case typ[0] != '"':
		return nil, errors.New(`"type" must be a string`)
	case len(typ) == 2:
		return nil, errors.New(`"type" must not be empty`)
	}
	return typ, nil
}

// patterns returns the distinct quoted forms of typ that the prefilter
// looks for: as configured (so tether's own messages are recognised) and
// as encoding/json writes it with and without HTML escaping.
func patterns(raw []byte, typ string) [][]byte {
	pats := [][]byte{raw}
	html, _ := json.Marshal(typ)
	var plain bytes.Buffer
	enc := json.NewEncoder(&plain)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(typ)
	for _, p := range [][]byte{html, bytes.TrimSuffix(plain.Bytes(), []byte("\n"))} {
		dup := false
		for _, q := range pats {
			dup = dup || bytes.Equal(p, q)
		}
		if !dup {
			pats = append(pats, p)
		}
	}
	return pats
}

// Ping returns the configured ping message. The caller must not modify it.
func (m *Messages) Ping() []byte { return m.ping }

// Pong returns the configured pong message. The caller must not modify it.
func (m *Messages) Pong() []byte { return m.pong }

// Classify reports whether the complete text message p is a JSON heartbeat:
// at most MaxHeartbeatSize bytes, a valid JSON object (whitespace around it
// allowed) whose top-level "type" member is a string equal to the ping's
// type (KindPing) or the pong's type (KindPong). When "type" appears more
// than once, every occurrence must agree. Anything else is KindData.
//
// Classify does not allocate. It parses only messages that pass a cheap
// prefilter: the first non-space byte is '{' and the quoted type appears
// in p as bytes. A heartbeat whose "type" value is written with needless
// escapes (`"p\u0069ng"`) therefore counts as data.
func (m *Messages) Classify(p []byte) Kind {
	if len(p) > MaxHeartbeatSize {
		return KindData
	}
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return KindData
	}
	if !m.prefilter(p) {
		return KindData
	}
	kind, found := KindData, false
	it := newMembers(p)
	for {
		key, val, ok := it.next()
		if !ok {
			break
		}
		if !stringEqual(key, "type") {
			continue
		}
		k := KindData
		switch {
		case val[0] != '"':
		case stringEqual(val, m.pingType):
			k = KindPing
		case stringEqual(val, m.pongType):
			k = KindPong
		}
		if found && k != kind {
			return KindData
		}
		kind, found = k, true
	}
	if !it.valid() {
		return KindData
	}
	return kind
}

// prefilter reports whether p contains one of m.pats. When the patterns
// share their second byte (the type's first byte, e.g. 'p' in "ping" and
// "pong"), it looks for that byte, which is rarer in JSON than '"', and
// checks every pattern there in one pass; after too many false candidates
// it falls back to bytes.Contains, which bounds the cost on any input.
func (m *Messages) prefilter(p []byte) bool {
	if m.lead < 0 {
		return containsAny(p, m.pats)
	}
	lead := byte(m.lead)
	fails := 0
	for i := 1; i < len(p); i++ {
		j := bytes.IndexByte(p[i:], lead)
		if j < 0 {
			return false
		}
		i += j
		if p[i-1] == '"' {
			for _, pat := range m.pats {
				if bytes.HasPrefix(p[i-1:], pat) {
					return true
				}
			}
		}
		if fails++; fails > 8+i/32 {
			return containsAny(p[i:], m.pats)
		}
	}
	return false
}

func containsAny(p []byte, pats [][]byte) bool {
	for _, pat := range pats {
		if bytes.Contains(p, pat) {
			return true
		}
	}
	return false
}

// AppendPong appends to dst the JSON pong that answers the JSON ping p
// (which Classify found to be KindPing) and returns the extended slice.
// The pong is the configured pong with every member of p other than
// "type" echoed: with the default messages, {"type":"ping","id":7}
// is answered with {"type":"pong","id":7}. Members of the configured pong
// other than "type" are kept unless p has a member of the same name. When
// p has no members besides "type", or is not a valid JSON object, the
// result is exactly Pong(). AppendPong allocates only to grow dst.
func (m *Messages) AppendPong(dst, p []byte) []byte {
	if !m.pingExtra && bytes.Equal(p, m.ping) {
		return append(dst, m.pong...)
	}
	// Validate p and look for extra members before writing anything.
	extra := false
	for it := newMembers(p); ; {
		key, _, ok := it.next()
		if !ok {
			if !it.valid() {
				return append(dst, m.pong...)
			}
			break
		}
		extra = extra || !stringEqual(key, "type")
	}
	if !extra {
		return append(dst, m.pong...)
	}
	dst = append(dst, `{"type":`...)
	dst = append(dst, m.pongRaw...)
	if m.pongExtra {
		for it := newMembers(m.pong); ; {
			key, val, ok := it.next()
			if !ok {
				break
			}
			if stringEqual(key, "type") || hasMember(p, key) {
				continue
			}
			dst = appendMember(dst, key, val)
		}
	}
	for it := newMembers(p); ; {
		key, val, ok := it.next()
		if !ok {
			break
		}
		if !stringEqual(key, "type") {
			dst = appendMember(dst, key, val)
		}
	}
	return append(dst, '}')
}

// hasExtra reports whether the valid JSON object p has members besides
// "type".
func hasExtra(p []byte) bool {
	for it := newMembers(p); ; {
		key, _, ok := it.next()
		if !ok {
			return false
		}
		if !stringEqual(key, "type") {
			return true
		}
	}
}

func appendMember(dst, key, val []byte) []byte {
	dst = append(dst, ',')
	dst = append(dst, key...)
	dst = append(dst, ':')
	return append(dst, val...)
}

// hasMember reports whether the valid JSON object p has a member named
// like the raw JSON string key.
func hasMember(p, key []byte) bool {
	for it := newMembers(p); ; {
		k, _, ok := it.next()
		if !ok {
			return false
		}
		if stringsEqual(k, key) {
			return true
		}
	}
}

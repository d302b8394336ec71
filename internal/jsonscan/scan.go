// Package jsonscan is a small, allocation-free JSON scanner: enough to
// validate a document (with the grammar of encoding/json.Valid) and to
// walk the members of its top-level object. Strings are compared the way
// encoding/json decodes them, without building the decoded string. It is
// shared by the heartbeat classifier and the replay recognisers (README
// "Heartbeats", "Upstream loss, reconnect and the delivery guarantee").
package jsonscan

import (
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth bounds nesting in SkipValue: a deeper document is reported
// invalid. A 4 KiB heartbeat cannot reach it.
const MaxDepth = 4096

const maxDepth = MaxDepth

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// SkipSpace returns the index of the first non-space byte at or after i.
func SkipSpace(p []byte, i int) int {
	for i < len(p) && isSpace(p[i]) {
		i++
	}
	return i
}

// ScanString validates the JSON string starting at p[i] == '"' and returns
// the index just after its closing quote. As in encoding/json, control
// characters must be escaped and invalid UTF-8 is accepted.
func ScanString(p []byte, i int) (int, bool) {
	if i >= len(p) || p[i] != '"' {
		return 0, false
	}
	for i++; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			i++
			if i >= len(p) {
				return 0, false
			}
			switch p[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(p) || hex4(p[i+1:i+5]) < 0 {
					return 0, false
				}
				i += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanNumber validates the JSON number starting at p[i].
func scanNumber(p []byte, i int) (int, bool) {
	if i < len(p) && p[i] == '-' {
		i++
	}
	switch {
	case i >= len(p):
		return 0, false
	case p[i] == '0':
		i++
	case '1' <= p[i] && p[i] <= '9':
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	default:
		return 0, false
	}
	if i < len(p) && p[i] == '.' {
		i++
		if i >= len(p) || !isDigit(p[i]) {
			return 0, false
		}
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if i >= len(p) || !isDigit(p[i]) {
			return 0, false
		}
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	}
	return i, true
}

func scanLiteral(p []byte, i int, lit string) (int, bool) {
	if len(p)-i < len(lit) || string(p[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// SkipValue validates the JSON value starting at p[i] (leading whitespace
// allowed) and returns the index just after it. It does not recurse:
// nesting is tracked in a fixed bit stack.
func SkipValue(p []byte, i int) (int, bool) {
	var stack [maxDepth / 64]uint64 // bit set: object, clear: array
	depth := 0
	ok := true
	for {
		// A value is expected at p[i].
		i = SkipSpace(p, i)
		if i >= len(p) {
			return 0, false
		}
		switch c := p[i]; c {
		case '{', '[':
			i = SkipSpace(p, i+1)
			if i < len(p) && (c == '{' && p[i] == '}' || c == '[' && p[i] == ']') {
				i++
				break
			}
			if depth == maxDepth {
				return 0, false
			}
			if c == '{' {
				stack[depth/64] |= 1 << (depth % 64)
				depth++
				if i, ok = scanColon(p, i); !ok {
					return 0, false
				}
			} else {
				stack[depth/64] &^= 1 << (depth % 64)
				depth++
			}
			continue
		case '"':
			i, ok = ScanString(p, i)
		case 't':
			i, ok = scanLiteral(p, i, "true")
		case 'f':
			i, ok = scanLiteral(p, i, "false")
		case 'n':
			i, ok = scanLiteral(p, i, "null")
		default:
			i, ok = scanNumber(p, i)
		}
		if !ok {
			return 0, false
		}
		// A value ended: close containers until one expects another value.
		for {
			if depth == 0 {
				return i, true
			}
			i = SkipSpace(p, i)
			if i >= len(p) {
				return 0, false
			}
			object := stack[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			c := p[i]
			if c == ',' {
				i++
				if object {
					if i, ok = scanColon(p, SkipSpace(p, i)); !ok {
						return 0, false
					}
				}
				break
			}
			if object && c == '}' || !object && c == ']' {
				i++
				depth--
				continue
			}
			return 0, false
		}
	}
}

// scanColon scans an object key at p[i] and the colon after it.
func scanColon(p []byte, i int) (int, bool) {
	i, ok := ScanString(p, i)
	if !ok {
		return 0, false
	}
	i = SkipSpace(p, i)
	if i >= len(p) || p[i] != ':' {
		return 0, false
	}
	return i + 1, true
}

// Members iterates over the members of a top-level JSON object. After
// Next returns false, Valid reports whether the whole input was one JSON
// object, with nothing but whitespace around it.
type Members struct {
	p     []byte
	i     int
	state uint8
}

const (
	membersFirst = iota // just after '{'
	membersMore         // after a member
	membersDone         // after '}' and trailing whitespace
	membersBad          // invalid input
)

// NewMembers starts iterating over the members of the object in p.
func NewMembers(p []byte) Members {
	i := SkipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return Members{state: membersBad}
	}
	return Members{p: p, i: i + 1}
}

// Next returns the raw key (with its quotes) and the raw value of the next
// member.
func (m *Members) Next() (key, val []byte, ok bool) {
	p, i := m.p, SkipSpace(m.p, m.i)
	switch m.state {
	case membersFirst:
		if i < len(p) && p[i] == '}' {
			return m.end(i + 1)
		}
	case membersMore:
		if i < len(p) && p[i] == '}' {
			return m.end(i + 1)
		}
		if i >= len(p) || p[i] != ',' {
			return m.fail()
		}
		i = SkipSpace(p, i+1)
	default:
		return nil, nil, false
	}
	k := i
	i, ok = ScanString(p, i)
	if !ok {
		return m.fail()
	}
	key = p[k:i]
	i = SkipSpace(p, i)
	if i >= len(p) || p[i] != ':' {
		return m.fail()
	}
	v := SkipSpace(p, i+1)
	i, ok = SkipValue(p, v)
	if !ok {
		return m.fail()
	}
	m.i, m.state = i, membersMore
	return key, p[v:i], true
}

func (m *Members) end(i int) ([]byte, []byte, bool) {
	if SkipSpace(m.p, i) != len(m.p) {
		return m.fail()
	}
	m.state = membersDone
	return nil, nil, false
}

func (m *Members) fail() ([]byte, []byte, bool) {
	m.state = membersBad
	return nil, nil, false
}

// Valid reports whether the input was a valid JSON object; call it after
// Next has returned false.
func (m *Members) Valid() bool { return m.state == membersDone }

// nextRune decodes the character at s[i] of a validated JSON string body
// (without quotes) exactly as encoding/json does: invalid UTF-8 and lone
// surrogates become U+FFFD.
func nextRune(s []byte, i int) (rune, int) {
	c := s[i]
	if c < utf8.RuneSelf && c != '\\' {
		return rune(c), i + 1
	}
	if c != '\\' {
		r, n := utf8.DecodeRune(s[i:])
		return r, i + n
	}
	switch s[i+1] {
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		r := hex4(s[i+2:])
		i += 6
		if !utf16.IsSurrogate(r) {
			return r, i
		}
		if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
			if d := utf16.DecodeRune(r, hex4(s[i+2:])); d != utf8.RuneError {
				return d, i + 6
			}
		}
		return utf8.RuneError, i
	default: // '"', '\\', '/'
		return rune(s[i+1]), i + 2
	}
}

// StringEqual reports whether the validated raw JSON string raw (with its
// quotes) decodes to s, which must be valid UTF-8.
func StringEqual(raw []byte, s string) bool {
	if len(raw) < 2 || raw[0] != '"' {
		return false
	}
	body := raw[1 : len(raw)-1]
	i, j := 0, 0
	for i < len(body) {
		if j >= len(s) {
			return false
		}
		r, ni := nextRune(body, i)
		r2, n := utf8.DecodeRuneInString(s[j:])
		if r != r2 {
			return false
		}
		i, j = ni, j+n
	}
	return j == len(s)
}

// StringsEqual reports whether two validated raw JSON strings (with their
// quotes) decode to the same string.
func StringsEqual(a, b []byte) bool {
	a, b = a[1:len(a)-1], b[1:len(b)-1]
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		var r1, r2 rune
		r1, i = nextRune(a, i)
		r2, j = nextRune(b, j)
		if r1 != r2 {
			return false
		}
	}
	return i == len(a) && j == len(b)
}

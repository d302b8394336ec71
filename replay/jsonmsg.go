package replay

import (
	"bytes"

	"github.com/tether-proxy/tether/internal/jsonscan"
)

// jsonMsg scans a JSON object for its "type" member and an id member,
// without allocating. peek stops at "type" so that a message whose type
// is of no interest costs only the members before it.
type jsonMsg struct {
	it  jsonscan.Members
	typ []byte // raw "type" value, a JSON string
	id  []byte // raw id value, when seen
}

// peek scans p up to its "type" member, which must be a string, noting
// the idKey member if it comes first.
func peek(p []byte, idKey string) (m jsonMsg, ok bool) {
	m.it = jsonscan.NewMembers(p)
	for {
		k, v, ok := m.it.Next()
		if !ok {
			return m, false
		}
		switch {
		case jsonscan.StringEqual(k, "type"):
			if v[0] != '"' {
				return m, false
			}
			m.typ = v
			return m, true
		case m.id == nil && jsonscan.StringEqual(k, idKey):
			m.id = v
		}
	}
}

// finish scans the rest of the object (noting the id member if not seen
// yet) and reports whether p was one valid JSON object. An id that is
// neither a string nor a number counts as absent.
func (m *jsonMsg) finish(idKey string) bool {
	for {
		k, v, ok := m.it.Next()
		if !ok {
			break
		}
		if m.id == nil && jsonscan.StringEqual(k, idKey) {
			m.id = v
		}
	}
	if m.id != nil && !(m.id[0] == '"' || m.id[0] == '-' || '0' <= m.id[0] && m.id[0] <= '9') {
		m.id = nil
	}
	return m.it.Valid()
}

func (m *jsonMsg) is(typ string) bool { return jsonscan.StringEqual(m.typ, typ) }

// idEqual compares two raw JSON ids: strings as decoded, numbers as
// written.
func idEqual(a, b []byte) bool {
	if a[0] == '"' && b[0] == '"' {
		return jsonscan.StringsEqual(a, b)
	}
	return bytes.Equal(a, b)
}

// keepJSON keeps the JSON message p (with its id, for matching; typ when
// same-type replacement applies), replacing a kept message that match
// finds.
func (s *State) keepJSON(op Opcode, p []byte, seq uint64, m *jsonMsg, typ bool) error {
	cp := bytes.Clone(p)
	it := &item{op: op, p: cp, lo: seq, hi: seq, pure: true, id: sub(cp, p, m.id)}
	if typ {
		it.typ = sub(cp, p, m.typ)
	}
	replace := -1
	for i, k := range s.subs {
		if typ && !jsonscan.StringsEqual(k.typ, it.typ) {
			continue
		}
		if it.id != nil && k.id != nil && idEqual(k.id, it.id) || it.id == nil && k.id == nil && bytes.Equal(k.p, cp) {
			replace = i
			break
		}
	}
	if replace >= 0 && it.id == nil {
		return nil // the same message again: already kept
	}
	return s.keep(it, replace)
}

// endID removes the kept messages whose id equals id.
func (s *State) endID(id []byte) {
	if id == nil {
		return
	}
	for i := 0; i < len(s.subs); {
		if k := s.subs[i]; k.id != nil && idEqual(k.id, id) {
			s.remove(i)
			continue
		}
		i++
	}
}

package replay

import "github.com/tether-proxy/tether/internal/jsonscan"

// jsonRules are the json protocol's type lists (Config).
type jsonRules struct {
	keep, end, replies []string
	id                 string
}

func oneOf(raw []byte, list []string) int {
	for i, t := range list {
		if jsonscan.StringEqual(raw, t) {
			return i
		}
	}
	return -1
}

func (s *State) jsonClient(op Opcode, p []byte, seq uint64) error {
	m, ok := peek(p, s.js.id)
	if !ok {
		return nil
	}
	switch {
	case oneOf(m.typ, s.js.keep) >= 0:
		if m.finish(s.js.id) {
			return s.keepJSON(op, p, seq, &m, true)
		}
	case oneOf(m.typ, s.js.end) >= 0:
		if m.finish(s.js.id) {
			s.endID(m.id)
		}
	}
	return nil
}

func (s *State) jsonUpstream(p []byte) Verdict {
	m, ok := peek(p, s.js.id)
	if !ok {
		return Verdict{Msg: p}
	}
	if oneOf(m.typ, s.js.end) >= 0 {
		if m.finish(s.js.id) {
			s.endID(m.id)
		}
		return Verdict{Msg: p}
	}
	if i := oneOf(m.typ, s.win.types); i >= 0 && m.finish(s.js.id) {
		s.win.types = append(s.win.types[:i], s.win.types[i+1:]...)
		return Verdict{Drop: true}
	}
	return Verdict{Msg: p}
}

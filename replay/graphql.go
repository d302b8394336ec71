package replay

// The graphql-transport-ws protocol (the graphql-ws library) and the older
// graphql-ws protocol (subscriptions-transport-ws).

func (s *State) graphqlClient(op Opcode, p []byte, seq uint64) error {
	m, ok := peek(p, "id")
	if !ok {
		return nil
	}
	transport := s.proto == GraphQLTransportWS
	switch {
	case m.is("connection_init"):
		if !m.finish("id") {
			return nil
		}
		cp := append([]byte(nil), p...)
		return s.setOpening(&item{op: op, p: cp, lo: seq, hi: seq, pure: true})
	case transport && m.is("subscribe"), !transport && m.is("start"):
		if !m.finish("id") || m.id == nil || m.id[0] != '"' {
			return nil
		}
		return s.keepJSON(op, p, seq, &m, false)
	case m.is("complete"), !transport && m.is("stop"):
		if m.finish("id") {
			s.endID(m.id)
		}
	case !transport && m.is("connection_terminate"):
		if m.finish("id") {
			s.finish()
		}
	}
	return nil
}

func (s *State) graphqlUpstream(p []byte) Verdict {
	m, ok := peek(p, "id")
	if !ok {
		return Verdict{Msg: p}
	}
	switch {
	case m.is("next"), m.is("data"), m.is("ka"), m.is("ping"), m.is("pong"):
		// the hot path: nothing to do
	case m.is("connection_ack"):
		if m.finish("id") {
			drop, ev := s.onAnswer(true)
			return Verdict{Drop: drop, Msg: p, Event: ev}
		}
	case s.proto == GraphQLWS && m.is("connection_error"):
		if m.finish("id") {
			_, ev := s.onAnswer(false)
			return Verdict{Msg: p, Event: ev}
		}
	case m.is("complete"), m.is("error"):
		// graphql-ws: subscriptions-transport-ws clients drop an
		// operation on "error" too.
		if m.finish("id") {
			s.endID(m.id)
		}
	}
	return Verdict{Msg: p}
}

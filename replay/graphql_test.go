package replay

import (
	"fmt"
	"strings"
	"testing"
)

// Messages as the graphql-ws library's client and server write them
// (JSON.stringify of {id, type, payload}).
const (
	gtInit    = `{"type":"connection_init","payload":{"authToken":"secret"}}`
	gtInit2   = `{"type":"connection_init","payload":{"authToken":"renewed"}}`
	gtAck     = `{"type":"connection_ack"}`
	gtPing    = `{"type":"ping"}`
	gtPong    = `{"type":"pong"}`
	gtSubA    = `{"id":"4b1e6ddc-1","type":"subscribe","payload":{"query":"subscription { greetings }"}}`
	gtSubB    = `{"id":"4b1e6ddc-2","type":"subscribe","payload":{"query":"subscription OnPrice($s: String!) { price(symbol: $s) }","variables":{"s":"ACME"}}}`
	gtSubC    = `{"id":"4b1e6ddc-3","type":"subscribe","payload":{"query":"subscription { ticks }"}}`
	gtNextA   = `{"id":"4b1e6ddc-1","type":"next","payload":{"data":{"greetings":"Hi"}}}`
	gtDoneA   = `{"id":"4b1e6ddc-1","type":"complete"}`
	gtDoneB   = `{"id":"4b1e6ddc-2","type":"complete"}`
	gtErrorC  = `{"id":"4b1e6ddc-3","type":"error","payload":[{"message":"Cannot query field \"ticks\""}]}`
	gtSubAEsc = `{"id":"4b1e6ddc\u002d1","type":"subscribe","payload":{"query":"subscription { greetings }"}}`
)

func TestGraphQLTransportWS(t *testing.T) {
	runPlanCases(t, GraphQLTransportWS, []planCase{
		{"keep and end", steps(cls(gtInit), ups(gtAck), cls(gtSubA, gtSubB, gtSubC, gtPing), ups(gtNextA, gtPong),
			cls(gtDoneB), ups(gtErrorC)), []string{gtInit}, []string{gtSubA}},
		{"server complete ends", steps(cls(gtInit, gtSubA, gtSubB), ups(gtDoneA)), []string{gtInit}, []string{gtSubB}},
		{"resubscribe after end", cls(gtInit, gtSubA, gtSubB, gtDoneA, gtSubA), []string{gtInit}, []string{gtSubB, gtSubA}},
		{"same id replaces", cls(gtInit, gtSubA, gtSubB, gtSubAEsc), []string{gtInit}, []string{gtSubB, gtSubAEsc}},
		{"latest init", cls(gtInit, gtSubA, gtInit2), []string{gtInit2}, []string{gtSubA}},
		{"nothing kept", cls(gtPing, gtPong, `{"id":"x","type":"complete"}`), nil, nil},
		{"type after payload", steps(cls(gtInit, `{"payload":{"query":"subscription { a }"},"id":"z","type":"subscribe"}`),
			ups(`{"payload":null,"type":"complete","id":"z"}`)), []string{gtInit}, nil},
	})
	t.Run("ack dropped after replay", func(t *testing.T) {
		h := newSess(t, GraphQLTransportWS)
		h.text(gtInit)
		h.upPass(Text, gtAck)
		h.text(gtSubA)
		h.upPass(Text, gtNextA)
		h.replay()
		h.upPass(Text, gtPing) // before the ack: passes, no event
		h.upWant(Text, gtAck, true, EventAccepted)
		h.upPass(Text, gtNextA, gtAck) // a second ack is not a reply to the replay
		// A second outage: the same again.
		h.replay()
		h.upWant(Text, gtAck, true, EventAccepted)
	})
	t.Run("ack passes when the client had none", func(t *testing.T) {
		h := newSess(t, GraphQLTransportWS)
		h.text(gtInit) // the upstream died before its ack
		wantPlan(t, h.replay(), []string{gtInit})
		h.upWant(Text, gtAck, false, EventAccepted)
		// Now the client has it: the next replay drops it.
		h.replay()
		h.upWant(Text, gtAck, true, EventAccepted)
	})
	t.Run("not acknowledged subscribe is left to the re-send", func(t *testing.T) {
		h := newSess(t, GraphQLTransportWS)
		h.text(gtInit)
		h.upPass(Text, gtAck)
		h.text(gtSubA, gtSubB, gtSubC) // seqs 1, 2, 3; 2 and 3 not provably received
		pl := h.replay(2)
		wantPlan(t, pl, []string{gtInit}, gtSubA)
		for seq := uint64(0); seq < 4; seq++ {
			if pl.Skip(seq) {
				t.Errorf("Skip(%d) = true", seq)
			}
		}
	})
	t.Run("held opening sent once", func(t *testing.T) {
		h := newSess(t, GraphQLTransportWS)
		h.text(gtInit, gtSubA) // nothing acknowledged
		pl := h.replay(0)
		wantPlan(t, pl, []string{gtInit})
		if !pl.Skip(0) || pl.Skip(1) {
			t.Errorf("Skip(0), Skip(1) = %v, %v; want true, false", pl.Skip(0), pl.Skip(1))
		}
		if pl.Len() != 1 {
			t.Errorf("Len = %d", pl.Len())
		}
	})
	t.Run("malformed passes", func(t *testing.T) {
		h := newSess(t, GraphQLTransportWS)
		h.text(gtInit)
		h.upPass(Text, gtAck)
		h.text(gtSubA)
		h.text(
			`{"id":"4b1e6ddc-2","type":"subscribe","payload":{}`, // truncated
			`{"id":2,"type":"subscribe","payload":{}}`,           // id not a string
			`{"type":"subscribe","payload":{}}`,                  // no id
			`{"id":"4b1e6ddc-1","type":"complete"`,               // truncated end
			`{"id":"4b1e6ddc-1","type":"complete"} x`,            // trailing garbage
			`{"id":"4b1e6ddc-1","type":complete}`,                // not JSON
			`["subscribe"]`, ``, "\xff\xfe", `{"type":["subscribe"]}`,
		)
		h.upPass(Text, `{"id":"4b1e6ddc-1","type":"complete"`, `{"id":"4b1e6ddc-1","type":"error","payload":[`, `garbage`, ``)
		wantPlan(t, h.replay(), []string{gtInit}, gtSubA)
		h.upPass(Text, `{"type":"connection_ack"`) // not JSON: not the answer
		h.upWant(Text, gtAck, true, EventAccepted)
	})
	t.Run("max bytes", func(t *testing.T) {
		h := newSess(t, GraphQLTransportWS, func(c *Config) { c.MaxBytes = 1000 })
		h.text(gtInit)
		overflow(t, h, Text, func(i int) string {
			return fmt.Sprintf(`{"id":"%d","type":"subscribe","payload":{"query":"subscription { a }"}}`, i)
		})
	})
	t.Run("max bytes not reached by resubscribing", func(t *testing.T) {
		h := newSess(t, GraphQLTransportWS, func(c *Config) { c.MaxBytes = 300 })
		h.text(gtInit)
		for range 100 {
			h.text(gtSubA, gtDoneA)
			h.text(gtSubB)
			h.upPass(Text, gtDoneB)
		}
		wantPlan(t, h.replay(), []string{gtInit})
	})
}

// subscriptions-transport-ws messages.
const (
	gwInit   = `{"type":"connection_init","payload":{"authToken":"secret"}}`
	gwAck    = `{"type":"connection_ack"}`
	gwKA     = `{"type":"ka"}`
	gwStart1 = `{"id":"1","type":"start","payload":{"variables":{},"extensions":{},"operationName":null,"query":"subscription {\n  commentAdded {\n    id\n  }\n}\n"}}`
	gwStart2 = `{"id":"2","type":"start","payload":{"variables":{"repo":"tether"},"query":"subscription($repo: String!) { starred(repo: $repo) }"}}`
	gwStart3 = `{"id":"3","type":"start","payload":{"query":"subscription { x }"}}`
	gwData1  = `{"type":"data","id":"1","payload":{"data":{"commentAdded":{"id":7}}}}`
	gwStop1  = `{"id":"1","type":"stop"}`
	gwDone2  = `{"type":"complete","id":"2"}`
	gwErr3   = `{"type":"error","id":"3","payload":{"message":"bad"}}`
	gwTerm   = `{"type":"connection_terminate"}`
	gwRefuse = `{"type":"connection_error","payload":{"message":"Unauthorized"}}`
)

func TestGraphQLWS(t *testing.T) {
	runPlanCases(t, GraphQLWS, []planCase{
		{"keep and end", steps(cls(gwInit), ups(gwAck, gwKA), cls(gwStart1, gwStart2, gwStart3), ups(gwData1),
			cls(gwStop1), ups(gwDone2, gwErr3)), []string{gwInit}, nil},
		{"resubscribe after end", cls(gwInit, gwStart1, gwStop1, gwStart2, gwStart1), []string{gwInit}, []string{gwStart2, gwStart1}},
		{"client complete ends", cls(gwInit, gwStart1, gwStart2, `{"id":"2","type":"complete"}`), []string{gwInit}, []string{gwStart1}},
		{"terminate", cls(gwInit, gwStart1, gwTerm, gwStart2), nil, nil},
	})
	t.Run("ack dropped, ka passes", func(t *testing.T) {
		h := newSess(t, GraphQLWS)
		h.text(gwInit)
		h.upPass(Text, gwAck)
		h.text(gwStart1)
		h.replay()
		h.upWant(Text, gwAck, true, EventAccepted)
		h.upPass(Text, gwKA, gwData1)
	})
	t.Run("refusal", func(t *testing.T) {
		h := newSess(t, GraphQLWS)
		h.text(gwInit)
		h.upPass(Text, gwAck)
		h.replay()
		h.upWant(Text, gwRefuse, false, EventRejected)
		h.upPass(Text, gwAck) // the wait is over
	})
	t.Run("refusal outside a replay", func(t *testing.T) {
		h := newSess(t, GraphQLWS)
		h.text(gwInit)
		h.upPass(Text, gwRefuse)
	})
}

func TestGraphQLHotPathIgnoresPayload(t *testing.T) {
	// A "next" with a huge payload containing "complete" strings is not
	// an end.
	h := newSess(t, GraphQLTransportWS)
	h.text(gtInit, gtSubA)
	big := `{"id":"4b1e6ddc-1","type":"next","payload":{"data":{"s":"` + strings.Repeat(`\"type\":\"complete\"`, 1000) + `"}}}`
	h.upPass(Text, big)
	wantPlan(t, h.replay(), []string{gtInit}, gtSubA)
}

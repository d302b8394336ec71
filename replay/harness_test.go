package replay

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// sess plays a session's part: numbered client messages, upstream
// messages, replays. Buffers passed in are overwritten after each call, as
// a session's read buffer would be, so that anything the State keeps
// without copying shows up.
type sess struct {
	t   testing.TB
	st  *State
	seq uint64
}

func newSess(t testing.TB, p Protocol, mutate ...func(*Config)) *sess {
	c := Defaults()
	c.Protocol = p
	for _, m := range mutate {
		m(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	st := New(p, &c)
	if st == nil {
		t.Fatalf("New(%v) = nil", p)
	}
	return &sess{t: t, st: st}
}

func scribble(b []byte) {
	for i := range b {
		b[i] = 0xEE
	}
}

// client sends one client message and fails on an error.
func (h *sess) client(op Opcode, msg string) {
	h.t.Helper()
	if err := h.clientErr(op, msg); err != nil {
		h.t.Fatalf("FromClient(%q) = %v", msg, err)
	}
}

func (h *sess) clientErr(op Opcode, msg string) error {
	b := []byte(msg)
	err := h.st.FromClient(op, b, h.seq)
	scribble(b)
	h.seq++
	return err
}

func (h *sess) text(msgs ...string) {
	h.t.Helper()
	for _, m := range msgs {
		h.client(Text, m)
	}
}

// up passes one upstream message and returns the verdict, with Msg copied.
func (h *sess) up(op Opcode, msg string) (bool, string, Event) {
	b := []byte(msg)
	v := h.st.FromUpstream(op, b)
	out := string(v.Msg)
	if !v.Drop && v.Msg == nil && len(msg) > 0 {
		h.t.Fatalf("FromUpstream(%q): neither dropped nor forwarded", msg)
	}
	scribble(b)
	return v.Drop, out, v.Event
}

// upPass checks that an upstream message passes unchanged with no event.
func (h *sess) upPass(op Opcode, msgs ...string) {
	h.t.Helper()
	for _, m := range msgs {
		drop, out, ev := h.up(op, m)
		if drop || out != m || ev != EventNone {
			h.t.Fatalf("FromUpstream(%q) = drop %v, %q, event %v; want it passed", m, drop, out, ev)
		}
	}
}

// upWant checks one upstream message's verdict.
func (h *sess) upWant(op Opcode, msg string, wantDrop bool, wantEv Event) {
	h.t.Helper()
	drop, out, ev := h.up(op, msg)
	if drop != wantDrop || ev != wantEv {
		h.t.Fatalf("FromUpstream(%q) = drop %v, event %v; want drop %v, event %v", msg, drop, ev, wantDrop, wantEv)
	}
	if !drop && out != msg {
		h.t.Fatalf("FromUpstream(%q) forwards %q", msg, out)
	}
}

// replay calls Replay with every message acknowledged (pendingFrom = the
// next sequence number) unless from is given.
func (h *sess) replay(from ...uint64) Plan {
	f := h.seq
	if len(from) > 0 {
		f = from[0]
	}
	return h.st.Replay(f)
}

func msgs(ms []Msg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.P)
	}
	return out
}

// wantPlan checks a plan's messages (as strings) and their order.
func wantPlan(t testing.TB, pl Plan, opening []string, rest ...string) {
	t.Helper()
	if got := msgs(pl.Opening); fmt.Sprint(got) != fmt.Sprint(opening) {
		t.Errorf("Opening = %q, want %q", got, opening)
	}
	if got := msgs(pl.Rest); fmt.Sprint(got) != fmt.Sprint(rest) {
		t.Errorf("Rest = %q, want %q", got, rest)
	}
	checkPlanOrder(t, pl)
}

// checkPlanOrder: replayed messages come in their original order.
func checkPlanOrder(t testing.TB, pl Plan) {
	t.Helper()
	for i := 1; i < len(pl.Rest); i++ {
		if pl.Rest[i].Seq < pl.Rest[i-1].Seq {
			t.Errorf("Rest out of order: seq %d after %d", pl.Rest[i].Seq, pl.Rest[i-1].Seq)
		}
	}
}

func TestParseProtocol(t *testing.T) {
	for _, name := range protocolNames {
		p, err := ParseProtocol(name)
		if err != nil || p.String() != name {
			t.Errorf("ParseProtocol(%q) = %v, %v", name, p, err)
		}
	}
	for _, bad := range []string{"", "MQTT", "graphql", "stomp "} {
		if _, err := ParseProtocol(bad); err == nil {
			t.Errorf("ParseProtocol(%q) = nil error", bad)
		}
	}
	if got := Protocol(99).String(); got != "Protocol(99)" {
		t.Errorf("String = %q", got)
	}
}

func TestResolve(t *testing.T) {
	cases := []struct {
		conf       Protocol
		sub, query string
		want       Protocol
	}{
		{Auto, "graphql-transport-ws", "", GraphQLTransportWS},
		{Auto, "graphql-ws", "", GraphQLWS},
		{Auto, "v10.stomp", "", STOMP},
		{Auto, "v11.stomp", "", STOMP},
		{Auto, "v12.stomp", "", STOMP},
		{Auto, "mqtt", "", MQTT},
		{Auto, "mqttv3.1", "", MQTT},
		{Auto, "", "EIO=4&transport=websocket", Opaque},
		{Auto, "", "transport=websocket&EIO=3", Opaque},
		{Auto, "", "EIO", Opaque},
		{Auto, "", "XEIO=4&eio=4", None},
		{Auto, "chat", "a=b", None},
		{Auto, "", "", None},
		{Auto, "v13.stomp", "", None},
		{Auto, "graphql-ws", "EIO=4", GraphQLWS}, // the subprotocol decides first
		{None, "graphql-ws", "", None},
		{JSON, "mqtt", "EIO=4", JSON},
		{Opaque, "", "", Opaque},
	}
	for _, c := range cases {
		if got := Resolve(c.conf, c.sub, c.query); got != c.want {
			t.Errorf("Resolve(%v, %q, %q) = %v, want %v", c.conf, c.sub, c.query, got, c.want)
		}
	}
}

// TestStrict: MQTT and STOMP streams take no message tether adds (README
// "Heartbeats"); every other protocol does.
func TestStrict(t *testing.T) {
	for p := range Protocol(len(protocolNames)) {
		if got, want := p.Strict(), p == MQTT || p == STOMP || p == GraphQLWS; got != want {
			t.Errorf("%v.Strict() = %v, want %v", p, got, want)
		}
	}
}

func TestSignalRHandshake(t *testing.T) {
	cases := []struct {
		msg  string
		want bool
	}{
		{"{\"protocol\":\"json\",\"version\":1}\x1e", true},
		{"{\"protocol\":\"messagepack\",\"version\":1}\x1e", true},
		{" { \"version\":1, \"protocol\":\"json\" } \x1e", true},
		{"{\"protocol\":\"json\",\"version\":1}", false},    // no record separator
		{"{\"type\":1,\"target\":\"send\"}\x1e", false},     // an invocation, no protocol
		{"{\"protocol\":\"json\",\"version\":1\x1e", false}, // not JSON
		{"\x1e", false}, // empty
		{"{\"protocol\":\"json\"}\x1e{\"type\":6}\x1e", false}, // two records: not the handshake alone
		{"[\"protocol\"]\x1e", false},
	}
	for _, c := range cases {
		if got := SignalRHandshake([]byte(c.msg)); got != c.want {
			t.Errorf("SignalRHandshake(%q) = %v, want %v", c.msg, got, c.want)
		}
	}
}

func TestNewNil(t *testing.T) {
	c := Defaults()
	for _, p := range []Protocol{Auto, None, Opaque} {
		if New(p, &c) != nil {
			t.Errorf("New(%v) != nil", p)
		}
	}
	for _, p := range []Protocol{GraphQLTransportWS, GraphQLWS, STOMP, MQTT, JSON} {
		if st := New(p, &c); st == nil || st.Protocol() != p {
			t.Errorf("New(%v) = %v", p, st)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		want string // error prefix, "" = valid
	}{
		{"defaults", Defaults(), ""},
		{"json without keep", Config{Protocol: JSON, JSONID: "id", MaxBytes: 1}, "TETHER_REPLAY_JSON_KEEP: "},
		{"json keep blank", Config{Protocol: JSON, JSONKeep: []string{" ", ""}, JSONID: "id", MaxBytes: 1}, "TETHER_REPLAY_JSON_KEEP: "},
		{"json", Config{Protocol: JSON, JSONKeep: []string{"subscribe"}, JSONEnd: []string{"unsubscribe"}, JSONID: "id", MaxBytes: 1}, ""},
		{"keep and end overlap", Config{Protocol: JSON, JSONKeep: []string{"sub", "x"}, JSONEnd: []string{" x"}, JSONID: "id", MaxBytes: 1}, "TETHER_REPLAY_JSON_END: "},
		{"max bytes 0", Config{Protocol: Auto, JSONID: "id"}, "TETHER_REPLAY_MAX_BYTES: "},
		{"max bytes negative", Config{Protocol: Auto, JSONID: "id", MaxBytes: -1}, "TETHER_REPLAY_MAX_BYTES: "},
		{"empty id", Config{Protocol: JSON, JSONKeep: []string{"a"}, JSONID: " ", MaxBytes: 1}, "TETHER_REPLAY_JSON_ID: "},
		{"bad protocol", Config{Protocol: Protocol(42), JSONID: "id", MaxBytes: 1}, "TETHER_REPLAY_PROTOCOL: "},
	}
	for _, c := range cases {
		err := c.c.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: Validate = %v", c.name, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want)):
			t.Errorf("%s: Validate = %v, want %q...", c.name, err, c.want)
		}
	}
	c := Config{Protocol: JSON, JSONKeep: []string{" sub ", "", "sub", "auth"}, JSONReplies: []string{""}, JSONID: " key ", MaxBytes: 1}
	if err := c.Validate(); err != nil || fmt.Sprint(c.JSONKeep) != "[sub auth]" || c.JSONReplies != nil || c.JSONID != "key" {
		t.Errorf("Validate tidied to %q %q %q, %v", c.JSONKeep, c.JSONReplies, c.JSONID, err)
	}
}

func TestCheckFixedReplay(t *testing.T) {
	cases := []struct {
		p           Protocol
		first, drop int
		want        string
	}{
		{None, 2, 1, ""},
		{Auto, 2, 1, ""},
		{GraphQLWS, 0, 0, ""},
		{GraphQLWS, 1, 0, "TETHER_REPLAY_FIRST: "},
		{MQTT, 0, 3, "TETHER_REPLAY_DROP_REPLIES: "},
		{Opaque, 1, 1, "TETHER_REPLAY_FIRST: "},
		{JSON, 0, 1, "TETHER_REPLAY_DROP_REPLIES: "},
	}
	for _, c := range cases {
		conf := Config{Protocol: c.p}
		err := conf.CheckFixedReplay(c.first, c.drop)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want)) {
			t.Errorf("CheckFixedReplay(%v, %d, %d) = %v, want %q", c.p, c.first, c.drop, err, c.want)
		}
	}
}

// overflow feeds state messages from next until FromClient fails, and
// checks the failure is ErrStateFull with the kept bytes within the limit.
func overflow(t *testing.T, h *sess, op Opcode, next func(i int) string) {
	t.Helper()
	for i := 0; ; i++ {
		err := h.clientErr(op, next(i))
		if h.st.Bytes() > h.st.max {
			t.Fatalf("kept %d bytes, over the limit %d", h.st.Bytes(), h.st.max)
		}
		if err != nil {
			if !errors.Is(err, ErrStateFull) {
				t.Fatalf("FromClient = %v, want ErrStateFull", err)
			}
			if i == 0 {
				t.Fatal("the first message already overflowed")
			}
			return
		}
		if i > 100000 {
			t.Fatal("no overflow")
		}
	}
}

var _ = bytes.Equal

// planCase is a script of client and upstream messages (the upstream
// ones must pass unchanged), then a replay of everything, with the plan
// wanted.
type planCase struct {
	name    string
	steps   []step
	opening []string
	rest    []string
}

func runPlanCases(t *testing.T, p Protocol, cases []planCase, mutate ...func(*Config)) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newSess(t, p, mutate...)
			h.run(c.steps...)
			wantPlan(t, h.replay(), c.opening, c.rest...)
		})
	}
}

// run plays client steps and upstream steps (which must pass).
func (h *sess) run(steps ...step) {
	h.t.Helper()
	for _, s := range steps {
		op := Text
		if s.ctrl&4 != 0 {
			op = Binary
		}
		switch s.ctrl & 3 {
		case stepClient:
			h.client(op, string(s.p))
		case stepUpstream:
			h.upPass(op, string(s.p))
		}
	}
}

// cls and ups are client and upstream text steps.
func cls(ms ...string) []step {
	var out []step
	for _, m := range ms {
		out = append(out, cl(Text, m))
	}
	return out
}

func ups(ms ...string) []step {
	var out []step
	for _, m := range ms {
		out = append(out, up(Text, m))
	}
	return out
}

func steps(groups ...[]step) []step {
	var out []step
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

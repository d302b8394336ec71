package heartbeat

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const (
	defaultPing = `{"type":"ping"}`
	defaultPong = `{"type":"pong"}`
)

func mustMessages(tb testing.TB, ping, pong string) *Messages {
	tb.Helper()
	m, err := NewMessages(ping, pong)
	if err != nil {
		tb.Fatalf("NewMessages(%q, %q): %v", ping, pong, err)
	}
	return m
}

func TestNewMessagesErrors(t *testing.T) {
	t.Parallel()
	const (
		pingErr = "TETHER_PING_MESSAGE: "
		pongErr = "TETHER_PONG_MESSAGE: "
	)
	tests := []struct {
		name, ping, pong, want string
	}{
		{"ping not json", `ping`, defaultPong, pingErr + "must be a JSON object"},
		{"ping empty", ``, defaultPong, pingErr + "must be a JSON object"},
		{"ping array", `[{"type":"ping"}]`, defaultPong, pingErr + "must be a JSON object"},
		{"ping string", `"ping"`, defaultPong, pingErr + "must be a JSON object"},
		{"ping truncated", `{"type":"ping"`, defaultPong, pingErr + "must be a JSON object"},
		{"ping trailing garbage", `{"type":"ping"}x`, defaultPong, pingErr + "must be a JSON object"},
		{"ping without type", `{"kind":"ping"}`, defaultPong, pingErr + `must have a "type" member`},
		{"ping nested type", `{"data":{"type":"ping"}}`, defaultPong, pingErr + `must have a "type" member`},
		{"ping type number", `{"type":1}`, defaultPong, pingErr + `"type" must be a string`},
		{"ping type empty", `{"type":""}`, defaultPong, pingErr + `"type" must not be empty`},
		{"ping type twice", `{"type":"ping","type":"ping"}`, defaultPong, pingErr + `"type" appears more than once`},
		{"ping too big", `{"type":"ping","pad":"` + strings.Repeat("x", MaxHeartbeatSize) + `"}`, defaultPong, pingErr + "must be at most 4096 bytes"},
		{"pong not json", defaultPing, `pong`, pongErr + "must be a JSON object"},
		{"pong without type", defaultPing, `{}`, pongErr + `must have a "type" member`},
		{"pong type null", defaultPing, `{"type":null}`, pongErr + `"type" must be a string`},
		{"same type", defaultPing, `{"type":"ping","reply":true}`, pongErr + `"type" must differ from the ping's ("ping")`},
		{"same type escaped", defaultPing, `{"type":"p\u0069ng"}`, pongErr + `"type" must differ`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := NewMessages(tt.ping, tt.pong)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("NewMessages() = %v, %v; want an error starting with %q", m, err, tt.want)
			}
		})
	}
}

func TestNewMessages(t *testing.T) {
	t.Parallel()
	tests := []struct{ ping, pong string }{
		{defaultPing, defaultPong},
		{`{"type":"hb","v":1}`, `{"type":"hb-ack"}`},
		{" {\n\t\"type\" : \"ping\" } ", `{"src":"tether","type":"pong"}`},
		{`{"type":"<hb>"}`, `{"type":"\u003chb-ack\u003e"}`},
		{`{"type":"p\u0069ng"}`, `{"type":"\"pong\""}`},
	}
	for _, tt := range tests {
		t.Run(tt.ping, func(t *testing.T) {
			t.Parallel()
			m := mustMessages(t, tt.ping, tt.pong)
			if string(m.Ping()) != tt.ping || string(m.Pong()) != tt.pong {
				t.Fatalf("Ping(), Pong() = %q, %q", m.Ping(), m.Pong())
			}
			// tether must recognise its own messages.
			if k := m.Classify(m.Ping()); k != KindPing {
				t.Errorf("Classify(Ping()) = %v", k)
			}
			if k := m.Classify(m.Pong()); k != KindPong {
				t.Errorf("Classify(Pong()) = %v", k)
			}
		})
	}
}

type classifyCase struct {
	name string
	in   string
	want Kind
}

// classifyCases are for the default ping and pong.
var classifyCases = []classifyCase{
	{"ping", `{"type":"ping"}`, KindPing},
	{"pong", `{"type":"pong"}`, KindPong},
	{"ping with id", `{"type":"ping","id":7}`, KindPing},
	{"pong with id", `{"id":7,"type":"pong"}`, KindPong},
	{"ping with many members", `{"id":"a","type":"ping","ts":-1.5e+3,"n":null,"ok":true,"no":false,"a":[1,{"b":[]},{}],"o":{"type":"pong"}}`, KindPing},
	{"whitespace", " \t\r\n{ \"type\" :\n\"ping\" , \"id\" : 1 }\n ", KindPing},
	{"empty", ``, KindData},
	{"only whitespace", "  \n", KindData},
	{"plain text", `ping`, KindData},
	{"quoted string", `"ping"`, KindData},
	{"empty object", `{}`, KindData},
	{"no type", `{"kind":"ping"}`, KindData},
	{"other type", `{"type":"message","text":"ping"}`, KindData},
	{"type prefix", `{"type":"pingpong"}`, KindData},
	{"type suffix", `{"type":"xping"}`, KindData},
	{"type case", `{"type":"PING"}`, KindData},
	{"key case", `{"Type":"ping"}`, KindData},
	{"nested type", `{"data":{"type":"ping"}}`, KindData},
	{"nested and other type", `{"type":"message","data":{"type":"ping"}}`, KindData},
	{"type array", `{"type":["ping"]}`, KindData},
	{"type object", `{"type":{"type":"ping"}}`, KindData},
	{"type null", `{"type":null,"x":"ping"}`, KindData},
	{"array", `[{"type":"ping"}]`, KindData},
	{"truncated", `{"type":"ping"`, KindData},
	{"truncated after comma", `{"type":"ping",`, KindData},
	{"trailing garbage", `{"type":"ping"}x`, KindData},
	{"two objects", `{"type":"ping"}{"type":"ping"}`, KindData},
	{"trailing comma", `{"type":"ping",}`, KindData},
	{"missing colon", `{"type" "ping"}`, KindData},
	{"single quotes", `{'type':'ping'}`, KindData},
	{"bad number", `{"type":"ping","n":01}`, KindData},
	{"bad fraction", `{"type":"ping","n":1.}`, KindData},
	{"bad exponent", `{"type":"ping","n":1e}`, KindData},
	{"lone minus", `{"type":"ping","n":-}`, KindData},
	{"bad literal", `{"type":"ping","b":tru}`, KindData},
	{"unclosed array", `{"type":"ping","a":[1,2}`, KindData},
	{"mismatched brackets", `{"type":"ping","a":{"b":1]}`, KindData},
	{"control character", "{\"type\":\"ping\",\"s\":\"a\x01\"}", KindData},
	{"bad escape", `{"type":"ping","s":"\q"}`, KindData},
	{"short unicode escape", `{"type":"ping","s":"\u12"}`, KindData},
	{"escaped quote in text", `{"text":"\"type\":\"ping\""}`, KindData},
	{"escaped key", `{"\u0074ype":"ping"}`, KindPing},
	{"escaped value with literal elsewhere", `{"type":"p\u0069ng","note":"ping"}`, KindPing},
	{"escaped value alone", `{"type":"p\u0069ng"}`, KindData}, // prefilter: documented
	{"escapes in other members", `{"type":"ping","s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}`, KindPing},
	{"invalid utf8 elsewhere", "{\"type\":\"ping\",\"s\":\"\xff\"}", KindPing},
	{"duplicate agreeing", `{"type":"ping","type":"ping"}`, KindPing},
	{"duplicate agreeing escaped", `{"type":"ping","\u0074ype":"p\u0069ng"}`, KindPing},
	{"duplicate ping pong", `{"type":"ping","type":"pong"}`, KindData},
	{"duplicate other", `{"type":"message","type":"ping"}`, KindData},
	{"duplicate non-string", `{"type":"ping","type":1}`, KindData},
	{"exactly max size", `{"type":"ping","pad":"` + strings.Repeat("x", MaxHeartbeatSize-24) + `"}`, KindPing},
	{"one byte over max", `{"type":"ping","pad":"` + strings.Repeat("x", MaxHeartbeatSize-23) + `"}`, KindData},
	{"deep nesting", `{"type":"ping","a":` + strings.Repeat("[", 2030) + strings.Repeat("]", 2030) + `}`, KindPing},
	{"deep nesting unbalanced", `{"type":"ping","a":` + strings.Repeat("[", 2030) + strings.Repeat("]", 2029) + `}`, KindData},
}

func TestClassify(t *testing.T) {
	t.Parallel()
	m := mustMessages(t, defaultPing, defaultPong)
	for _, tt := range classifyCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := m.Classify([]byte(tt.in)); got != tt.want {
				t.Errorf("Classify(%.100q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestClassifySizes(t *testing.T) {
	t.Parallel()
	m := mustMessages(t, defaultPing, defaultPong)
	for _, n := range []int{MaxHeartbeatSize, MaxHeartbeatSize + 1} {
		p := []byte(`{"type":"ping"}` + strings.Repeat(" ", n-len(defaultPing)))
		want := KindPing
		if n > MaxHeartbeatSize {
			want = KindData
		}
		if got := m.Classify(p); got != want {
			t.Errorf("Classify(%d bytes) = %v, want %v", len(p), got, want)
		}
	}
}

func TestClassifyCustom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, ping, pong string
		cases            []classifyCase
	}{
		{
			name: "hb", ping: `{"type":"hb","v":1}`, pong: `{"type":"hb-ack"}`,
			cases: []classifyCase{
				{"ping", `{"type":"hb","v":1}`, KindPing},
				{"ping without v", `{"type":"hb"}`, KindPing},
				{"ping other v", `{"v":2,"type":"hb"}`, KindPing},
				{"pong", `{"type":"hb-ack"}`, KindPong},
				{"default ping", `{"type":"ping"}`, KindData},
				{"default pong", `{"type":"pong"}`, KindData},
				{"type prefix", `{"type":"hbx"}`, KindData},
				{"nested", `{"data":{"type":"hb"}}`, KindData},
			},
		},
		{
			name: "html", ping: `{"type":"<hb>"}`, pong: `{"type":"<hb-ack>"}`,
			cases: []classifyCase{
				{"as configured", `{"type":"<hb>"}`, KindPing},
				{"html escaped by a json encoder", `{"type":"\u003chb\u003e"}`, KindPing},
				{"pong html escaped", `{"type":"\u003chb-ack\u003e","id":1}`, KindPong},
				{"other", `{"type":"hb"}`, KindData},
			},
		},
		{
			name: "unicode", ping: `{"type":"心跳"}`, pong: `{"type":"\u5fc3\u8df3\u56de"}`,
			cases: []classifyCase{
				{"ping", `{"type":"心跳"}`, KindPing},
				{"ping escaped", `{"type":"\u5fc3\u8df3"}`, KindData}, // prefilter: documented
				{"pong", `{"type":"心跳回"}`, KindPong},
				{"pong as configured", `{"type":"\u5fc3\u8df3\u56de"}`, KindPong},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := mustMessages(t, tt.ping, tt.pong)
			for _, c := range tt.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					if got := m.Classify([]byte(c.in)); got != c.want {
						t.Errorf("Classify(%q) = %v, want %v", c.in, got, c.want)
					}
				})
			}
		})
	}
}

func decodeObject(tb testing.TB, p []byte) map[string]any {
	tb.Helper()
	var v map[string]any
	if err := json.Unmarshal(p, &v); err != nil {
		tb.Fatalf("decode %q: %v", p, err)
	}
	return v
}

func TestAppendPong(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, ping, pong string
		in               string
		want             string // compared semantically
		exact            bool   // want byte equality
	}{
		{name: "plain ping", ping: defaultPing, pong: defaultPong, in: defaultPing, want: defaultPong, exact: true},
		{name: "plain ping with spaces", ping: defaultPing, pong: defaultPong, in: ` { "type" : "ping" } `, want: defaultPong, exact: true},
		{name: "id", ping: defaultPing, pong: defaultPong, in: `{"type":"ping","id":7}`, want: `{"type":"pong","id":7}`},
		{name: "members before type", ping: defaultPing, pong: defaultPong, in: `{"ts":1.5,"type":"ping","id":"x","o":{"a":[1, 2]}}`, want: `{"type":"pong","ts":1.5,"id":"x","o":{"a":[1,2]}}`},
		{name: "ping may not set type", ping: defaultPing, pong: defaultPong, in: `{"type":"ping","\u0074ype":"ping","id":1}`, want: `{"type":"pong","id":1}`},
		{name: "pong members kept", ping: defaultPing, pong: `{"src":"tether","type":"pong"}`, in: `{"type":"ping","id":7}`, want: `{"type":"pong","src":"tether","id":7}`},
		{name: "plain ping pong members", ping: defaultPing, pong: `{"src":"tether","type":"pong"}`, in: defaultPing, want: `{"src":"tether","type":"pong"}`, exact: true},
		{name: "ping members win", ping: defaultPing, pong: `{"type":"pong","src":"tether","v":1}`, in: `{"type":"ping","src":"app"}`, want: `{"type":"pong","src":"app","v":1}`},
		{name: "ping members win escaped", ping: defaultPing, pong: `{"type":"pong","src":"tether"}`, in: `{"type":"ping","\u0073rc":"app"}`, want: `{"type":"pong","src":"app"}`},
		{name: "configured ping extras echoed", ping: `{"type":"hb","v":1}`, pong: `{"type":"hb-ack"}`, in: `{"type":"hb","v":1}`, want: `{"type":"hb-ack","v":1}`},
		{name: "configured ping without extras", ping: `{"type":"hb","v":1}`, pong: `{"type":"hb-ack"}`, in: `{"type":"hb"}`, want: `{"type":"hb-ack"}`, exact: true},
		{name: "escaped pong type", ping: defaultPing, pong: `{"type":"\u003cpong\u003e"}`, in: `{"type":"ping","id":1}`, want: `{"type":"<pong>","id":1}`},
		{name: "invalid input", ping: defaultPing, pong: defaultPong, in: `{"type":"ping",`, want: defaultPong, exact: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := mustMessages(t, tt.ping, tt.pong)
			prefix := []byte("prefix")
			got := m.AppendPong(prefix[:len(prefix):len(prefix)], []byte(tt.in))
			if !bytes.HasPrefix(got, prefix) {
				t.Fatalf("AppendPong did not append: %q", got)
			}
			got = got[len(prefix):]
			if tt.exact && string(got) != tt.want {
				t.Fatalf("AppendPong(%q) = %q, want exactly %q", tt.in, got, tt.want)
			}
			if g, w := decodeObject(t, got), decodeObject(t, []byte(tt.want)); !reflect.DeepEqual(g, w) {
				t.Fatalf("AppendPong(%q) = %s, want %s", tt.in, got, tt.want)
			}
			if k := m.Classify(got); k != KindPong {
				t.Errorf("Classify(AppendPong()) = %v, want pong", k)
			}
		})
	}
}

// appMessages are typical application messages: none is a heartbeat.
var appMessages = map[string][]byte{
	"small JSON": []byte(`{"type":"message","id":"01HZX3K9Q2","room":"general","user":{"id":4711,"name":"alice"},` +
		`"text":"are we still on for the review at three? I'll bring the numbers","ts":1718035200123,"mentions":[]}`),
	"2KB JSON":   bigJSON(),
	"plain text": []byte(strings.Repeat("the quick brown fox jumps over the lazy dog ", 5)),
}

func bigJSON() []byte {
	var b bytes.Buffer
	b.WriteString(`{"type":"update","items":[`)
	for i := 0; b.Len() < 2000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":12345,"name":"widget","price":19.99,"tags":["a","b"],"ok":true}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func TestClassifyNoAlloc(t *testing.T) {
	// Not parallel: testing.AllocsPerRun panics in parallel tests.
	m := mustMessages(t, defaultPing, defaultPong)
	msgs := map[string][]byte{"ping": []byte(`{"type":"ping","id":7}`), "pong": []byte(defaultPong)}
	for name, p := range appMessages {
		msgs[name] = p
	}
	for name, p := range msgs {
		t.Run(name, func(t *testing.T) {
			if name == "small JSON" && (len(p) < 150 || len(p) > 250) {
				t.Fatalf("small JSON is %d bytes", len(p))
			}
			want := KindData
			switch name {
			case "ping":
				want = KindPing
			case "pong":
				want = KindPong
			}
			if k := m.Classify(p); k != want {
				t.Fatalf("Classify = %v, want %v", k, want)
			}
			if n := testing.AllocsPerRun(100, func() { m.Classify(p) }); n != 0 {
				t.Errorf("Classify allocates %v times", n)
			}
		})
	}
}

func TestAppendPongNoAlloc(t *testing.T) {
	// Not parallel: testing.AllocsPerRun panics in parallel tests.
	m := mustMessages(t, defaultPing, defaultPong)
	dst := make([]byte, 0, 256)
	for _, p := range [][]byte{m.Ping(), []byte(`{"type":"ping","id":7,"ts":1718035200123}`)} {
		if n := testing.AllocsPerRun(100, func() { dst = m.AppendPong(dst[:0], p) }); n != 0 {
			t.Errorf("AppendPong(%s) allocates %v times", p, n)
		}
	}
}

func TestSkipValueDepth(t *testing.T) {
	t.Parallel()
	// The innermost, empty array takes no stack slot.
	for _, depth := range []int{maxDepth + 1, maxDepth + 2} {
		p := []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		_, ok := skipValue(p, 0)
		if want := depth <= maxDepth+1; ok != want {
			t.Errorf("skipValue(depth %d) = %v, want %v", depth, ok, want)
		}
	}
}

package heartbeat

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// fuzzMessages are the configurations FuzzClassify checks every input
// against.
var fuzzMessages = [][2]string{
	{defaultPing, defaultPong},
	{`{"type":"hb","v":1}`, `{"type":"hb-ack","src":"tether"}`},
	{`{"type":"<p>"}`, `{"type":"\u00e9\ud83d\ude00"}`},
	{`{"type":"hb"}`, `{"type":"ack"}`},
}

// refClassify is Classify written with encoding/json, without the
// prefilter.
func refClassify(m *Messages, p []byte) Kind {
	if len(p) > MaxHeartbeatSize || !json.Valid(p) {
		return KindData
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return KindData
	}
	kind, found := KindData, false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return KindData
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return KindData
		}
		if tok.(string) != "type" {
			continue
		}
		k := KindData
		var s string
		if val[0] == '"' && json.Unmarshal(val, &s) == nil {
			switch s {
			case m.pingType:
				k = KindPing
			case m.pongType:
				k = KindPong
			}
		}
		if found && k != kind {
			return KindData
		}
		kind, found = k, true
	}
	return kind
}

func FuzzClassify(f *testing.F) {
	for _, c := range classifyCases {
		f.Add([]byte(c.in))
	}
	for _, c := range fuzzMessages {
		f.Add([]byte(c[0]))
		f.Add([]byte(c[1]))
	}
	for _, p := range appMessages {
		f.Add(p)
	}
	f.Add([]byte(`{"type":"ping","id":7,"src":{"a":"\ud800"}}`))
	f.Add([]byte(`{"type":"hb","\u0073rc":1,"v":[true]}`))
	f.Add([]byte(`{"a":[` + strings.Repeat(`"p",`, 300) + `"x"],"type":"ping"}`))

	var ms []*Messages
	for _, c := range fuzzMessages {
		ms = append(ms, mustMessages(f, c[0], c[1]))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, m := range ms {
			if got, want := m.prefilter(p), containsAny(p, m.pats); got != want {
				t.Fatalf("ping %s: prefilter(%q) = %v, want %v", m.Ping(), p, got, want)
			}
			got := m.Classify(p)
			if want := refClassify(m, p); got != want {
				// Only the prefilter may turn a heartbeat into data.
				if got != KindData || containsAny(p, m.pats) {
					t.Fatalf("ping %s: Classify(%q) = %v, encoding/json says %v", m.Ping(), p, got, want)
				}
			}
			if got == KindData {
				continue
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(p, &obj); err != nil {
				t.Fatalf("Classify(%q) = %v, but encoding/json: %v", p, got, err)
			}
			var typ string
			if err := json.Unmarshal(obj["type"], &typ); err != nil {
				t.Fatalf("Classify(%q) = %v, but \"type\": %v", p, got, err)
			}
			if want := map[Kind]string{KindPing: m.pingType, KindPong: m.pongType}[got]; typ != want {
				t.Fatalf("Classify(%q) = %v, but \"type\" is %q", p, got, typ)
			}
			if got != KindPing {
				continue
			}
			checkPong(t, m, p, obj)
		}
	})
}

// checkPong checks AppendPong for the JSON ping p, decoded as obj.
func checkPong(t *testing.T, m *Messages, p []byte, obj map[string]json.RawMessage) {
	t.Helper()
	pong := m.AppendPong(nil, p)
	var out map[string]json.RawMessage
	if err := json.Unmarshal(pong, &out); err != nil {
		t.Fatalf("AppendPong(%q) = %q: %v", p, pong, err)
	}
	var typ string
	if err := json.Unmarshal(out["type"], &typ); err != nil || typ != m.pongType {
		t.Fatalf("AppendPong(%q) = %q: type %q, %v", p, pong, typ, err)
	}
	if k := m.Classify(pong); k != KindPong && len(pong) <= MaxHeartbeatSize {
		t.Fatalf("Classify(AppendPong(%q)) = %v", p, k)
	}
	var conf map[string]json.RawMessage
	_ = json.Unmarshal(m.Pong(), &conf)
	extra := false
	for k, v := range obj {
		if k == "type" {
			continue
		}
		extra = true
		if !bytes.Equal(out[k], v) {
			t.Fatalf("AppendPong(%q) = %q: member %q is %s, want %s", p, pong, k, out[k], v)
		}
	}
	for k, v := range conf {
		if _, ok := obj[k]; !ok && k != "type" && !bytes.Equal(out[k], v) {
			t.Fatalf("AppendPong(%q) = %q: lost pong member %q", p, pong, k)
		}
	}
	if len(out) != len(obj)+len(conf)-len(intersect(obj, conf)) {
		t.Fatalf("AppendPong(%q) = %q: unexpected members", p, pong)
	}
	if !extra && !bytes.Equal(pong, m.Pong()) {
		t.Fatalf("AppendPong(%q) = %q, want exactly %q", p, pong, m.Pong())
	}
}

func intersect(a, b map[string]json.RawMessage) []string {
	var both []string
	for k := range a {
		if _, ok := b[k]; ok {
			both = append(both, k)
		}
	}
	return both
}

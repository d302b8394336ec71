package heartbeat

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkClassifyBaseline is the naive recogniser, a json.Unmarshal of
// every text message, measured in the same run as BenchmarkClassify so the
// prefilter's gain can be stated as a ratio.
func BenchmarkClassifyBaseline(b *testing.B) {
	for _, name := range []string{"small JSON", "2KB JSON", "plain text"} {
		p := appMessages[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				var v struct {
					Type string `json:"type"`
				}
				_ = json.Unmarshal(p, &v)
			}
		})
	}
}

func BenchmarkClassify(b *testing.B) {
	m := mustMessages(b, defaultPing, defaultPong)
	cases := []struct {
		name string
		p    []byte
	}{
		{"small JSON", appMessages["small JSON"]},
		{"2KB JSON", appMessages["2KB JSON"]},
		{"plain text", appMessages["plain text"]},
		{"ping", m.Ping()},
		{"ping with id", []byte(`{"type":"ping","id":7,"ts":1718035200123}`)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.p)))
			for b.Loop() {
				m.Classify(c.p)
			}
		})
	}
}

func BenchmarkAppendPong(b *testing.B) {
	m := mustMessages(b, defaultPing, defaultPong)
	cases := []struct {
		name string
		p    []byte
	}{
		{"plain", m.Ping()},
		{"with id", []byte(`{"type":"ping","id":7,"ts":1718035200123}`)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			dst := make([]byte, 0, 256)
			for b.Loop() {
				dst = m.AppendPong(dst[:0], c.p)
			}
		})
	}
}

func BenchmarkTracker(b *testing.B) {
	b.ReportAllocs()
	var tr Tracker
	now := time.Now()
	var seq uint64
	for b.Loop() {
		seq++
		p := tr.SentWS(now, seq)
		tr.PongWS(now, p[:])
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSoak is the short soak CI runs: tether built from this module, a few
// hundred sessions for 35 s under faults and client drops, and every
// invariant of the long soak (see the package doc). -short shrinks it.
func TestSoak(t *testing.T) {
	cfg := Config{
		Duration:   35 * time.Second,
		Sessions:   300,
		Seed:       1,
		DropMean:   10 * time.Second,
		FaultEvery: 1500 * time.Millisecond,
		MemWait:    150 * time.Second, // an upper bound: polled, usually seconds
	}
	if testing.Short() {
		cfg.Duration, cfg.Sessions = 15*time.Second, 100
	}
	rep, err := Run(t.Context(), cfg, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	t.Log("\n" + buf.String())
	if !rep.OK() {
		t.Fatalf("invariants violated:\n%s", strings.Join(rep.Failed(), "\n"))
	}
}

func TestParseMsg(t *testing.T) {
	t.Parallel()
	for _, bin := range []bool{false, true} {
		p := makeMsg("s1.2", 77, bin, 100)
		m, err := parseMsg(p)
		if err != nil || m.conn != "s1.2" || m.seq != 77 || m.binary != bin {
			t.Fatalf("parseMsg(makeMsg) = %+v, %v", m, err)
		}
	}
	good := makeMsg("s1.2", 5, false, 10)
	for name, p := range map[string][]byte{
		"flipped byte": append(append([]byte(nil), good[:len(good)-1]...), 'z'),
		"truncated":    good[:len(good)-1],
		"no header":    []byte("hello"),
		"bad seq":      []byte("m s1 x t 0|"),
		"bad kind":     []byte("m s1 1 q 0|"),
	} {
		if _, err := parseMsg(p); err == nil {
			t.Errorf("%s: %q accepted", name, p)
		}
	}
}

// The backend's checks find loss, reordering, cross-session delivery and
// corruption; a re-send (a repeat, then consecutive) is allowed.
func TestBackendChecks(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		conns [][]int64 // message numbers per upstream connection, in turn
		wrong string    // send one message naming this session instead
		bad   int       // violations expected
	}{
		{"in order", [][]int64{{0, 1, 2, 3}}, "", 0},
		{"re-send after a loss", [][]int64{{0, 1, 2, 3}, {2, 3, 4}, {4, 5}}, "", 0},
		{"gap", [][]int64{{0, 1, 3}}, "", 1},
		{"gap across a reconnect", [][]int64{{0, 1}, {3, 4}}, "", 1},
		{"reordered on one connection", [][]int64{{0, 2, 1}}, "", 2},
		{"other session's message", [][]int64{{0}}, "other", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := &violations{}
			b, err := newBackend(v)
			if err != nil {
				t.Fatal(err)
			}
			defer b.close()
			for _, seqs := range tc.conns {
				c, _, err := websocket.DefaultDialer.Dial("ws://"+b.addr()+"/up?conn=x", nil)
				if err != nil {
					t.Fatal(err)
				}
				send := func(conn string, seq int64) {
					if err := c.WriteMessage(websocket.TextMessage, makeMsg(conn, seq, false, 3)); err != nil {
						t.Fatal(err)
					}
					if _, _, err := c.ReadMessage(); err != nil { // the echo: processed
						t.Fatal(err)
					}
				}
				for _, s := range seqs {
					send("x", s)
				}
				if tc.wrong != "" {
					if err := c.WriteMessage(websocket.TextMessage, makeMsg(tc.wrong, 9, false, 3)); err != nil {
						t.Fatal(err)
					}
					send("x", seqs[len(seqs)-1]+1)
				}
				c.Close()
			}
			if n, first := v.snapshot(); n != tc.bad {
				t.Fatalf("%d violations %q, want %d", n, first, tc.bad)
			}
		})
	}
}

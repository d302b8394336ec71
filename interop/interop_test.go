package interop

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
)

// combo is one client library and one backend library with tether
// between them. Every library meets each heartbeat mode on its leg
// across the table, and the client libraries meet compression on and off.
type combo struct {
	client, backend      string
	clientHB, upstreamHB heartbeat.Mode
	compression          bool
	tls                  bool // wss:// on both legs
}

var combos = []combo{
	{client: "node", backend: "node", clientHB: heartbeat.ModeJSON, upstreamHB: heartbeat.ModeWS, compression: true},
	{client: "python", backend: "python", clientHB: heartbeat.ModeWS, upstreamHB: heartbeat.ModeJSON, compression: true},
	{client: "node", backend: "python", clientHB: heartbeat.ModeWS, upstreamHB: heartbeat.ModeJSON, compression: false, tls: true},
	{client: "python", backend: "node", clientHB: heartbeat.ModeJSON, upstreamHB: heartbeat.ModeWS, compression: false, tls: true},
}

// message is one message a test sends through tether.
type message struct {
	typ             string
	size, fragments int
	splitsUTF8      bool // node's byte split cuts a UTF-8 sequence
}

const mib = 1 << 20 // README "Configuration" TETHER_MAX_MESSAGE_BYTES default: allowed

var messages = []message{
	{"text", 5, 1, false},
	{"text", 200, 1, false}, // multi-byte UTF-8
	{"binary", 10, 1, false},
	{"text", 0, 1, false},
	{"binary", 0, 1, false},
	{"text", mib, 1, false},
	{"binary", mib, 1, false},
	{"text", 1001, 7, true},
	{"binary", mib, 16, false},
	{"text", mib, 5, false},
}

// TestPeers runs Node's ws and Python's websockets through tether, as client
// and as backend: subprotocol choice, extension negotiation, text and binary
// messages up to TETHER_MAX_MESSAGE_BYTES, fragmented ones, heartbeats in json
// and ws mode on each leg, and close codes both ways (README "Running in front
// of a real backend" and "Heartbeats" and "Close codes").
func TestPeers(t *testing.T) {
	t.Parallel()
	for _, c := range combos {
		name := fmt.Sprintf("%s-client_%s-backend", c.client, c.backend)
		if c.tls {
			name += "_wss"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runCombo(t, c)
		})
	}
}

func runCombo(t *testing.T, c combo) {
	var certFile, keyFile string
	var clientEnv, backendEnv []string
	scheme := "ws"
	if c.tls {
		certFile, keyFile = selfSigned(t)
		clientEnv = []string{"INTEROP_CA=" + certFile}
		backendEnv = []string{"INTEROP_CERT=" + certFile, "INTEROP_KEY=" + keyFile}
		scheme = "wss"
	}
	backend := startPeer(t, c.backend+" backend", c.backend, backendEnv, "server", "tether.v2", "tether.v9")
	port := backend.expect(t, "listening").Port
	const interval = 100 * time.Millisecond
	tt := startTether(t, fmt.Sprintf("%s://127.0.0.1:%d/app", scheme, port), func(cfg *proxy.Config) {
		cfg.ClientCompression = c.compression
		cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
		cfg.UpstreamCAFile = certFile
		// Timeouts well above the interval: a loaded CI machine must not
		// turn a slow peer into a heartbeat timeout.
		cfg.Session.ClientHeartbeat = heartbeat.Config{Mode: c.clientHB, Interval: interval, Timeout: 20 * time.Second}
		cfg.Session.UpstreamHeartbeat = heartbeat.Config{Mode: c.upstreamHB, Interval: interval, Timeout: 20 * time.Second}
	})
	offer := []string{"tether.v1", "tether.v2", "tether.v3"}
	client := startPeer(t, c.client+" client", c.client, clientEnv, append([]string{"client", tt.URL + "/chat?room=1"}, offer...)...)

	co := client.expect(t, "open")
	bo := backend.expect(t, "open")
	t.Logf("client: protocol %q extensions %q; backend: offered %q", co.Protocol, co.Extensions, bo.Offered)
	t.Run("subprotocol", func(t *testing.T) {
		// The backend supports v2 and v9: it chooses v2 from the forwarded
		// offer, and the client sees the backend's choice.
		if got := splitList(bo.Offered); !slices.Equal(got, offer) {
			t.Errorf("backend saw offered subprotocols %q, want %q", got, offer)
		}
		if bo.Protocol != "tether.v2" || co.Protocol != "tether.v2" {
			t.Errorf("backend chose %q, client got %q; want tether.v2 on both", bo.Protocol, co.Protocol)
		}
	})
	t.Run("extensions", func(t *testing.T) {
		// Both libraries offer permessage-deflate; tether answers it only
		// with TETHER_CLIENT_COMPRESSION, and never passes it upstream.
		if c.compression != strings.Contains(co.Extensions, "permessage-deflate") {
			t.Errorf("compression %v: client got Sec-WebSocket-Extensions %q", c.compression, co.Extensions)
		}
		if !c.compression && co.Extensions != "" {
			t.Errorf("compression off: client got Sec-WebSocket-Extensions %q, want none", co.Extensions)
		}
		if bo.Extensions != "" {
			t.Errorf("backend got Sec-WebSocket-Extensions %q, want none", bo.Extensions)
		}
	})

	sent := map[*peer]int{}
	seed := 0
	for _, m := range messages {
		for _, dir := range []struct {
			from, to *peer
			name     string
		}{{client, backend, "client to backend"}, {backend, client, "backend to client"}} {
			seed++
			name := fmt.Sprintf("%s %s %d bytes in %d frames", dir.name, m.typ, m.size, m.fragments)
			t.Run(name, func(t *testing.T) {
				want := gen(m.typ, m.size, seed)
				if m.splitsUTF8 && dir.from.lang == "node" && !splitsRune(want, m.fragments) {
					t.Fatal("test table: node's fragments of this message end on character boundaries only")
				}
				read, written := tt.wire.read.Load(), tt.wire.written.Load()
				dir.from.send(t, m.typ, m.size, seed, m.fragments)
				got := dir.to.expect(t, "message")
				sent[dir.to]++
				if got.Type != m.typ || got.Size != m.size || got.SHA256 != digest(want) {
					t.Fatalf("received %s, want %s %d bytes sha256 %.12s", describe(got), m.typ, m.size, digest(want))
				}
				if got.Text != nil && len(want) <= 256 && *got.Text != string(want) {
					t.Fatalf("received text %q, want %q", *got.Text, want)
				}
				if m.size == mib && m.typ == "text" && m.fragments == 1 {
					// The generated text is highly repetitive: with
					// permessage-deflate it crosses the client connection
					// in a small fraction of its size.
					wire := tt.wire.read.Load() - read
					if dir.to == client {
						wire = tt.wire.written.Load() - written
					}
					if c.compression && wire > mib/8 {
						t.Errorf("compression on: %d bytes on the client connection for a %d-byte text", wire, m.size)
					}
					if !c.compression && wire < mib {
						t.Errorf("compression off: only %d bytes on the client connection for a %d-byte text", wire, m.size)
					}
					t.Logf("%d bytes on the client connection for %d bytes of text", wire, m.size)
				}
			})
		}
	}

	t.Run("RFC ping from the peer", func(t *testing.T) {
		// tether answers pings itself, with the same payload (README "Heartbeats").
		for _, p := range []*peer{client, backend} {
			p.do(t, map[string]any{"op": "ping", "data": "are you there " + p.name})
			if e := p.expect(t, "pong"); e.Data != "are you there "+p.name {
				t.Errorf("%s got a pong with %q", p.name, e.Data)
			}
		}
	})

	t.Run("JSON ping from the peer", func(t *testing.T) {
		// On a leg in json mode tether answers a JSON ping itself and
		// echoes its extra members (README "Heartbeats"); it does not forward it.
		for _, p := range []struct {
			p    *peer
			mode heartbeat.Mode
		}{{client, c.clientHB}, {backend, c.upstreamHB}} {
			if p.mode != heartbeat.ModeJSON {
				continue
			}
			p.p.do(t, map[string]any{"op": "jsonping", "id": 42})
			e := p.p.expect(t, "message")
			sent[p.p]++
			var pong struct {
				Type string `json:"type"`
				ID   int    `json:"id"`
			}
			if e.Text == nil || json.Unmarshal([]byte(*e.Text), &pong) != nil || pong.Type != "pong" || pong.ID != 42 {
				t.Errorf("%s got %s for its JSON ping, want {\"type\":\"pong\",\"id\":42}", p.p.name, e.line)
			}
		}
	})

	t.Run("heartbeats", func(t *testing.T) {
		// Every interval tether pings each leg; the libraries answer RFC
		// pings by themselves, the scripts answer JSON pings.
		for _, leg := range []string{"client", "upstream"} {
			waitMetric(t, tt, 3, "tether_heartbeat_pongs_received_total", "leg="+leg)
			if n := metric(t, tt, "tether_heartbeat_rtt_seconds", "leg="+leg); n < 3 {
				t.Errorf("%d round trips measured on the %s leg, want >= 3", int(n), leg)
			}
			if n := metric(t, tt, "tether_heartbeat_timeouts_total", "leg="+leg); n != 0 {
				t.Errorf("%v heartbeat timeouts on the %s leg", n, leg)
			}
		}
		for _, p := range []struct {
			p    *peer
			mode heartbeat.Mode
		}{{client, c.clientHB}, {backend, c.upstreamHB}} {
			s := p.p.stats(t)
			// Heartbeats are consumed by tether: the peer's message count
			// is exactly the test's messages.
			if s.Messages != sent[p.p] {
				t.Errorf("%s received %d messages, want %d (a heartbeat forwarded?)", p.p.name, s.Messages, sent[p.p])
			}
			switch p.mode {
			case heartbeat.ModeJSON:
				if s.JSONPings < 3 || s.Pings != 0 {
					t.Errorf("%s in json mode answered %d JSON pings and %d RFC pings; want >= 3 and 0", p.p.name, s.JSONPings, s.Pings)
				}
			case heartbeat.ModeWS:
				if s.JSONPings != 0 || s.Pings < 3 {
					t.Errorf("%s in ws mode answered %d JSON pings and %d RFC pings; want 0 and >= 3", p.p.name, s.JSONPings, s.Pings)
				}
			}
		}
	})

	t.Run("client closes 4001", func(t *testing.T) {
		client.close(t, 4001, "bye")
		if e := backend.expect(t, "close"); e.Code != 4001 || e.Reason != "bye" {
			t.Errorf("backend saw close %d %q, want 4001 \"bye\"", e.Code, e.Reason)
		}
		if e := client.expect(t, "close"); e.Code != 4001 {
			t.Errorf("client's close handshake ended with %d %q, want 4001", e.Code, e.Reason)
		}
	})

	// Each of these runs a session of its own: a new client connection
	// and a new backend connection.
	session := func(t *testing.T, path string) *peer {
		t.Helper()
		client.do(t, map[string]any{"op": "connect", "url": tt.URL + path, "protocols": []string{"tether.v2"}})
		if e := client.expect(t, "open"); e.Protocol != "tether.v2" {
			t.Errorf("client got protocol %q", e.Protocol)
		}
		backend.expect(t, "open")
		return client
	}

	t.Run("backend closes 4002", func(t *testing.T) {
		client := session(t, "/again")
		backend.close(t, 4002, "later")
		if e := client.expect(t, "close"); e.Code != 4002 || e.Reason != "later" {
			t.Errorf("client saw close %d %q, want 4002 \"later\"", e.Code, e.Reason)
		}
		if e := backend.expect(t, "close"); e.Code != 4002 {
			t.Errorf("backend's close handshake ended with %d %q, want 4002", e.Code, e.Reason)
		}
	})

	// README "Close codes": a message one byte over TETHER_MAX_MESSAGE_BYTES.
	t.Run("client message over the limit", func(t *testing.T) {
		client := session(t, "/big")
		client.send(t, "binary", mib+1, 1, 1)
		if e := client.expect(t, "close"); e.Code != 1009 {
			t.Errorf("client saw close %d %q, want 1009", e.Code, e.Reason)
		}
		if e := backend.expect(t, "close"); e.Code != 1001 {
			t.Errorf("backend saw close %d %q, want 1001", e.Code, e.Reason)
		}
	})
	t.Run("backend message over the limit", func(t *testing.T) {
		client := session(t, "/big")
		backend.send(t, "text", mib+1, 1, 3)
		if e := client.expect(t, "close"); e.Code != 1014 {
			t.Errorf("client saw close %d %q, want 1014", e.Code, e.Reason)
		}
		if e := backend.expect(t, "close"); e.Code != 1009 {
			t.Errorf("backend saw close %d %q, want 1009", e.Code, e.Reason)
		}
	})

	// README "Close codes": a Close without a code is passed on without one (1005
	// is what the libraries report for it). Only ws sends one: websockets' close()
	// always has a code.
	if c.client == "node" {
		t.Run("client closes without a code", func(t *testing.T) {
			client := session(t, "/nocode")
			client.close(t, 0, "")
			if e := backend.expect(t, "close"); e.Code != 1005 {
				t.Errorf("backend saw close %d %q, want none (1005)", e.Code, e.Reason)
			}
			if e := client.expect(t, "close"); e.Code != 1005 {
				t.Errorf("client's close handshake ended with %d %q, want none (1005)", e.Code, e.Reason)
			}
		})
	}
	if c.backend == "node" {
		t.Run("backend closes without a code", func(t *testing.T) {
			client := session(t, "/nocode")
			backend.close(t, 0, "")
			if e := client.expect(t, "close"); e.Code != 1005 {
				t.Errorf("client saw close %d %q, want none (1005)", e.Code, e.Reason)
			}
			if e := backend.expect(t, "close"); e.Code != 1005 {
				t.Errorf("backend's close handshake ended with %d %q, want none (1005)", e.Code, e.Reason)
			}
		})
	}
}

// splitsRune reports whether cutting b into n byte ranges of equal size
// (node/peer.js) cuts inside a UTF-8 sequence.
func splitsRune(b []byte, n int) bool {
	step := (len(b) + n - 1) / n
	for i := step; i < len(b); i += step {
		if !utf8.RuneStart(b[i]) {
			return true
		}
	}
	return false
}

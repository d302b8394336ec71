package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// echoServer is a gorilla echo server on 127.0.0.1 that also serves a
// tiny Prometheus text page at /metrics for the idle mode.
func echoServer(t *testing.T) (wsURL, admin string) {
	t.Helper()
	var up websocket.Upgrader
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, p) != nil {
				return
			}
		}
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# HELP go_goroutines x\ngo_goroutines 10\nprocess_resident_memory_bytes 1e6\ntether_sessions_active{x=\"y\"} 3\n"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", srv.URL
}

func TestEchoAndIdleModes(t *testing.T) {
	u, admin := echoServer(t)
	if err := run(u, "echo", "", 3, 64, 1000, 200*time.Millisecond); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if err := run(u, "idle", admin, 3, 0, 1000, 50*time.Millisecond); err != nil {
		t.Fatalf("idle: %v", err)
	}
	if err := run(u, "bogus", "", 1, 0, 1000, time.Millisecond); err == nil {
		t.Fatal("unknown mode accepted")
	}
	m := sample(admin)
	if m["go_goroutines"] != 10 || m["process_resident_memory_bytes"] != 1e6 {
		t.Fatalf("sample = %v", m)
	}
	if _, ok := m["tether_sessions_active"]; ok {
		t.Fatal("labelled series must be skipped")
	}
}

package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/internal/rawtcp"
	"github.com/tether-proxy/tether/internal/testkit"
)

// On a TLS listener, crypto/tls reads and writes the client's socket
// through a rawtcp.Conn (README "Performance": system calls the scheduler
// does not see).
func TestTLSListenerSocketIsRaw(t *testing.T) {
	certFile, keyFile, pool := testkit.SelfSigned(t)
	cfg, err := DefaultConfig("ws://127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	s, err := New(cfg, Options{CloseWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	under := make(chan net.Conn, 1)
	s.http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tc, ok := clientConnOf(r).Conn.(*tls.Conn); ok {
			under <- tc.NetConn()
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-served
	}()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	select {
	case c := <-under:
		if _, ok := c.(*rawtcp.Conn); !ok {
			t.Fatalf("the TLS connection reads and writes a %T, want a *rawtcp.Conn", c)
		}
	default:
		t.Fatal("the handler saw no TLS connection")
	}
}

// A wss:// upstream's TLS client reads and writes its socket through a
// rawtcp.Conn too.
func TestTLSUpstreamSocketIsRaw(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c) // until the dialer closes
		_ = c.Close()
	}))
	defer up.Close()
	cfg, err := DefaultConfig("wss://" + up.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cfg.UpstreamTLSInsecure = true // httptest's certificate
	s, err := New(cfg, Options{CloseWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	u, _, err := s.newDialer(r, false).dial(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Conn.Close()
	tc, ok := u.Conn.(*tls.Conn)
	if !ok {
		t.Fatalf("the wss:// upstream is a %T, want a *tls.Conn", u.Conn)
	}
	if _, ok := tc.NetConn().(*rawtcp.Conn); !ok {
		t.Fatalf("the upstream's TLS connection reads and writes a %T, want a *rawtcp.Conn", tc.NetConn())
	}
}

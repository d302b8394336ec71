package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// coreSelfSigned writes a self-signed certificate for 127.0.0.1 and
// localhost into a temporary directory and returns the file names and a
// pool that trusts it.
func coreSelfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	return testkit.SelfSigned(t)
}

// README "Configuration" TETHER_TLS_CERT_FILE/KEY_FILE: the listener serves
// wss, and the upstream sees X-Forwarded-Proto: https.
func TestCoreTLSListener(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := coreSelfSigned(t)
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	})
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial("wss://"+tt.Addr+"/secure", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	coreEcho(t, c, "over tls")
	if got := b.lastRequest().Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want https", got)
	}
	// Plain ws:// on the TLS listener does not get a session.
	if c, _, err := websocket.DefaultDialer.Dial(tt.URL, nil); err == nil {
		c.Close()
		t.Error("a plain ws:// handshake succeeded on the TLS listener")
	}
}

// README "Configuration" TETHER_UPSTREAM_CA_FILE and
// TETHER_UPSTREAM_TLS_INSECURE: a wss:// upstream is verified against the
// system pool plus the CA file; failing verification is a 502.
func TestCoreTLSUpstream(t *testing.T) {
	t.Parallel()
	up := coreNewUp(t, true, func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		echo(c, r)
	})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	otherCA, _, _ := coreSelfSigned(t)
	cases := []struct {
		name     string
		ca       string
		insecure bool
		want     int
	}{
		{"CA file", caFile, false, 101},
		{"no CA", "", false, 502},
		{"another CA", otherCA, false, 502},
		{"insecure", "", true, 101},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := up.hits.Load()
			tt := startTether(t, up.URL, func(c *proxy.Config) {
				c.UpstreamCAFile = tc.ca
				c.UpstreamTLSInsecure = tc.insecure
			})
			if tc.want != 101 {
				if got, _ := coreStatus(t, nil, tt.URL, nil); got != tc.want {
					t.Errorf("status %d, want %d", got, tc.want)
				}
				return
			}
			c := dial(t, tt.URL, nil)
			coreEcho(t, c, "to wss")
			if up.hits.Load() == before {
				t.Error("the wss upstream was not reached")
			}
		})
	}
}

// README "Configuration": a CA file that cannot be read or holds no
// certificate is a configuration error naming the variable.
func TestCoreTLSConfigErrors(t *testing.T) {
	t.Parallel()
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("no pem here"), 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, _, _ := coreSelfSigned(t)
	cases := []struct {
		name string
		mod  func(*proxy.Config)
		want string
	}{
		{"missing CA file", func(c *proxy.Config) { c.UpstreamCAFile = "/nonexistent/ca.pem" }, "TETHER_UPSTREAM_CA_FILE"},
		{"CA file without PEM", func(c *proxy.Config) { c.UpstreamCAFile = empty }, "TETHER_UPSTREAM_CA_FILE"},
		{"cert without key", func(c *proxy.Config) { c.TLSCertFile = certFile }, "TETHER_TLS_KEY_FILE"},
		{"unreadable key pair", func(c *proxy.Config) { c.TLSCertFile, c.TLSKeyFile = certFile, empty }, "TETHER_TLS_"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := proxy.DefaultConfig("ws://127.0.0.1:1")
			if err != nil {
				t.Fatal(err)
			}
			tc.mod(&cfg)
			_, err = proxy.New(cfg, proxy.Options{})
			if err == nil || len(err.Error()) < len(tc.want) || err.Error()[:len(tc.want)] != tc.want {
				t.Errorf("New: %v, want an error starting with %s", err, tc.want)
			}
		})
	}
}

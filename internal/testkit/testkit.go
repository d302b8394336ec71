// Package testkit holds helpers that tests of several packages share: a
// metric reader over a Prometheus registry, a self-signed certificate for
// 127.0.0.1, the skip-or-fail rule for outside peers, headless Chromium,
// a log sink tests can read while tether writes, and sleeping processes
// at normal or real-time priority. Only tests import it.
package testkit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"encoding/pem"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric returns the value of a counter or gauge, or the sample count of a
// histogram, whose labels include every "name=value" given (0 when no such
// series exists yet). The metric must be registered.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range labels {
				k, v, _ := strings.Cut(l, "=")
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		return 0
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// SelfSigned writes a self-signed CA certificate for 127.0.0.1 and
// localhost, and its key, into a temporary directory, and returns the file
// names and a pool that trusts it (the certificate file is also a CA file).
func SelfSigned(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tether test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// Missing skips a test whose outside peer is missing, saying why (and how
// to install it); under CI=true, where every peer is installed, it fails.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true requires it)")
	}
	t.Skip(why)
}

// ChromiumPath is Debian's Chromium (apt-get install chromium).
const ChromiumPath = "/usr/bin/chromium"

// FindChromium returns the Chromium binary, or calls Missing.
func FindChromium(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err == nil {
		return ChromiumPath
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	Missing(t, "chromium not found at "+ChromiumPath+" or on PATH; install it with `apt-get install -y chromium` to run the browser tests")
	return ""
}

// Browser starts one headless Chromium tab and returns its context; the
// browser ends with the test. Its flags keep it off the network (this
// machine's closed network refuses background connections) and off any
// proxy in the environment.
func Browser(t testing.TB, execPath string, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	userData := t.TempDir() // before the allocator: its cleanup runs after the browser is gone
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.UserDataDir(userData),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-proxy-server", true),
	)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first action starts the browser, bound to ctx (a timeout on it
	// would end the browser too).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// SaveArtifact writes data as name into $TETHER_ARTIFACTS (CI keeps that
// directory; .ci/run sets it), or into a temporary directory when it is
// unset, and logs the path.
func SaveArtifact(t testing.TB, name string, data []byte) {
	t.Helper()
	dir := os.Getenv("TETHER_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("artifact %s: %v", name, err)
		return
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Errorf("artifact %s: %v", name, err)
		return
	}
	abs, _ := filepath.Abs(path)
	t.Logf("artifact: %s", abs)
}

// Request sends method url (no body) and returns the response with its
// body read and closed.
func Request(t testing.TB, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// LockedBuffer is a log sink tests can read while tether writes to it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Sleeper starts `sleep 60`, under `chrt -f 1` (real-time priority) when
// realTime, and returns its pid once it runs sleep (chrt sets the policy,
// then execs sleep under the same pid); it is killed when the test ends.
// A test that needs a real-time process is skipped where chrt -f is not
// allowed (it needs root).
func Sleeper(t *testing.T, realTime bool) int {
	t.Helper()
	args := []string{"sleep", "60"}
	if realTime {
		if err := exec.Command("chrt", "-f", "1", "true").Run(); err != nil {
			t.Skipf("chrt -f is not allowed here (%v): run as root with util-linux's chrt", err)
		}
		args = append([]string{"chrt", "-f", "1"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pid := cmd.Process.Pid
	comm := filepath.Join("/proc", strconv.Itoa(pid), "comm")
	// No event tells when another process has exec'd: poll its name.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if b, _ := os.ReadFile(comm); string(b) == "sleep\n" {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v did not exec sleep within 10 s", args)
		}
	}
}

// LoopbackPair is a connected pair of TCP sockets on 127.0.0.1, the dialed
// end and the accepted one, both closed when the test ends.
func LoopbackPair(tb testing.TB) (dialed, accepted *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s := <-acc
	if s == nil {
		c.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

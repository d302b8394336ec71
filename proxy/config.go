package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/envconfig"
	"github.com/tether-proxy/tether/session"
)

// Config is the listener-level configuration of README "Configuration" plus
// the per-session part (Session). Env tags are relative to TETHER_.
type Config struct {
	// UpstreamURLs are tried in order, rotating on failure. Required.
	UpstreamURLs envconfig.URLList `env:"UPSTREAM_URL,required" help:"ws:// or wss:// URL of the backend; several, comma separated, for failover"`
	// ListenAddr is the client-facing listener (default ":8080").
	ListenAddr string `env:"LISTEN_ADDR" envDefault:":8080" help:"client-facing listener"`
	// AdminAddr serves /healthz, /readyz and /metrics (default ":9090");
	// empty disables it (main checks presence: an empty variable here
	// means disabled, not default).
	AdminAddr string `env:"ADMIN_ADDR" envDefault:":9090" help:"/healthz, /readyz, /metrics; empty disables"`
	// TLSCertFile and TLSKeyFile: both set makes the listener serve TLS.
	TLSCertFile string `env:"TLS_CERT_FILE" help:"with TETHER_TLS_KEY_FILE: the listener serves TLS (wss)"`
	TLSKeyFile  string `env:"TLS_KEY_FILE" help:"with TETHER_TLS_CERT_FILE: the listener serves TLS (wss)"`
	// UpstreamCAFile is an extra PEM bundle for wss:// upstreams.
	UpstreamCAFile string `env:"UPSTREAM_CA_FILE" help:"extra CA bundle (PEM) for wss:// upstreams"`
	// UpstreamTLSInsecure skips upstream certificate checks.
	UpstreamTLSInsecure bool `env:"UPSTREAM_TLS_INSECURE" envDefault:"false" help:"skip upstream certificate checks (logs a warning at start)"`
	// AllowedOrigins: empty or "*" allows all; a request without Origin is
	// always allowed.
	AllowedOrigins []string `env:"ALLOWED_ORIGINS" help:"comma list of allowed Origin values; empty or * allows all"`
	// MaxSessions: 0 = unlimited; beyond it handshakes get 503.
	MaxSessions int `env:"MAX_SESSIONS" envDefault:"0" help:"0 = unlimited; beyond it new handshakes get HTTP 503"`
	// ClientCompression negotiates permessage-deflate on the client leg.
	ClientCompression bool `env:"CLIENT_COMPRESSION" envDefault:"false" help:"negotiate permessage-deflate (RFC 7692) on the client leg when the client offers it"`
	// HandshakeTimeout bounds accept to completed upgrade.
	HandshakeTimeout time.Duration `env:"HANDSHAKE_TIMEOUT" envDefault:"10s" help:"one deadline from TCP accept to a completed upgrade"`
	// DialTimeout bounds connecting and upgrading to the upstream.
	DialTimeout time.Duration `env:"DIAL_TIMEOUT" envDefault:"10s" help:"time to connect and upgrade to the upstream"`

	Session session.Config

	// ShutdownTimeout is the drain time on SIGTERM/SIGINT.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"15s" help:"drain time on SIGTERM/SIGINT"`
	// ShutdownSpread spreads client closes of a drain (clamped to half
	// the timeout).
	ShutdownSpread time.Duration `env:"SHUTDOWN_SPREAD" envDefault:"5s" help:"client closes on a drain are spread over this window (at most half the timeout)"`
}

// Prefill sets the defaults that differ between fields of the same type
// (per-leg heartbeat modes). Call it before parsing.
func (c *Config) Prefill() {
	c.Session.ClientHeartbeat.Mode = heartbeat.ModeBoth
	c.Session.UpstreamHeartbeat.Mode = heartbeat.ModeWS
}

// DefaultConfig returns README "Configuration"'s defaults with upstreamURL as
// the backend.
func DefaultConfig(upstreamURL string) (Config, error) {
	var c Config
	c.Prefill()
	if err := envconfig.Parse(&c, map[string]string{"TETHER_UPSTREAM_URL": upstreamURL}); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate checks c and fills computed defaults; every error starts with
// the variable's name.
func (c *Config) Validate() error {
	if len(c.UpstreamURLs) == 0 {
		return errors.New("TETHER_UPSTREAM_URL: required, not set")
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return fmt.Errorf("TETHER_LISTEN_ADDR: %q is not host:port", c.ListenAddr)
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return fmt.Errorf("TETHER_ADMIN_ADDR: %q is not host:port", c.AdminAddr)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		if c.TLSCertFile == "" {
			return errors.New("TETHER_TLS_CERT_FILE: must be set with TETHER_TLS_KEY_FILE")
		}
		return errors.New("TETHER_TLS_KEY_FILE: must be set with TETHER_TLS_CERT_FILE")
	}
	if c.MaxSessions < 0 {
		return errors.New("TETHER_MAX_SESSIONS: must be 0 (unlimited) or more")
	}
	if c.HandshakeTimeout <= 0 {
		return errors.New("TETHER_HANDSHAKE_TIMEOUT: must be positive")
	}
	if c.DialTimeout <= 0 {
		return errors.New("TETHER_DIAL_TIMEOUT: must be positive")
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("TETHER_SHUTDOWN_TIMEOUT: must be positive")
	}
	return c.Session.Validate()
}

// serverTLS loads the listener certificate, if configured.
func (c *Config) serverTLS() (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("TETHER_TLS_CERT_FILE: %v", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}, nil
}

// upstreamTLS builds the client TLS config for wss:// upstreams.
func (c *Config) upstreamTLS() (*tls.Config, error) {
	tc := &tls.Config{InsecureSkipVerify: c.UpstreamTLSInsecure, MinVersion: tls.VersionTLS12} //nolint:gosec // operator's explicit choice, warned about at start
	if c.UpstreamCAFile != "" {
		pem, err := os.ReadFile(c.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("TETHER_UPSTREAM_CA_FILE: %v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TETHER_UPSTREAM_CA_FILE: no PEM certificate in %s", c.UpstreamCAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

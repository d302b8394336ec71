package session

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/replay"
)

// Config is the per-session behaviour of README "Configuration". Its env tags
// are relative to TETHER_; main composes it. Zero values are not the defaults:
// use the envDefault tags (main) or Defaults.
type Config struct {
	// MaxMessageBytes is the largest message either leg may send, after
	// joining fragments (default 1 MiB).
	MaxMessageBytes int `env:"MAX_MESSAGE_BYTES" envDefault:"1048576" help:"largest message (after joining fragments) either leg may send"`
	// WriteTimeout: a peer that does not drain one frame within it is dead.
	WriteTimeout time.Duration `env:"WRITE_TIMEOUT" envDefault:"10s" help:"a peer that does not drain a write within this is dead"`

	ClientHeartbeat   heartbeat.Config `envPrefix:"CLIENT_HEARTBEAT_"`
	UpstreamHeartbeat heartbeat.Config `envPrefix:"UPSTREAM_HEARTBEAT_"`

	PingMessage string `env:"PING_MESSAGE" envDefault:"{\"type\":\"ping\"}" help:"JSON ping (json mode)"`
	PongMessage string `env:"PONG_MESSAGE" envDefault:"{\"type\":\"pong\"}" help:"JSON pong (json mode)"`

	Reconnect ReconnectConfig `envPrefix:"RECONNECT_"`
	Buffer    BufferConfig    `envPrefix:"BUFFER_"`

	// ReplayFirst: the first N client messages are re-sent first on every
	// new upstream connection (0 = none).
	ReplayFirst int `env:"REPLAY_FIRST" envDefault:"0" help:"the first N client messages of a session are re-sent first on every new upstream connection"`
	// ReplayDropReplies: the first M upstream data messages on a
	// re-established connection are dropped (0 = none).
	ReplayDropReplies int `env:"REPLAY_DROP_REPLIES" envDefault:"0" help:"on a re-established upstream connection, drop the first M upstream data messages"`
	// NotifyClient sends the upstream status messages of README "Upstream loss,
	// reconnect and the delivery guarantee".
	NotifyClient bool `env:"NOTIFY_CLIENT" envDefault:"false" help:"send upstream status messages to the client"`

	// Replay is README "State replay on upstream reconnect"
	// (TETHER_REPLAY_PROTOCOL, TETHER_REPLAY_JSON_*, TETHER_REPLAY_MAX_BYTES).
	Replay replay.Config
	Resume ResumeConfig `envPrefix:"RESUME_"`
}

// ResumeConfig is README "Client session resume". Env tags are relative
// to TETHER_RESUME_.
type ResumeConfig struct {
	// Window is how long a detached resumable session waits for its
	// client; 0 turns resume off.
	Window time.Duration `env:"WINDOW" envDefault:"2m" help:"how long a resumable session whose client leg dropped waits for its client to resume; 0 turns resume off"`
	// MaxMessages and MaxBytes bound the upstream messages a resumable
	// session holds for its client (sent and not acknowledged, plus those
	// waiting while detached); the bytes count in TotalMaxBytes.
	MaxMessages int   `env:"MAX_MESSAGES" envDefault:"1024" help:"upstream messages a resumable session holds (sent and not acknowledged by the client, plus those waiting while detached)"`
	MaxBytes    int64 `env:"MAX_BYTES" envDefault:"1048576" help:"same, in bytes (also counted in TETHER_BUFFER_TOTAL_MAX_BYTES)"`
}

// ReconnectConfig is README "Upstream loss, reconnect and the delivery
// guarantee"'s backoff. Env tags are relative to TETHER_RECONNECT_.
type ReconnectConfig struct {
	InitialDelay time.Duration `env:"INITIAL_DELAY" envDefault:"250ms" help:"first backoff step"`
	MaxDelay     time.Duration `env:"MAX_DELAY" envDefault:"10s" help:"backoff cap"`
	// MaxAttempts is the number of dials per outage; 0 = unlimited.
	MaxAttempts int `env:"MAX_ATTEMPTS" envDefault:"20" help:"dials per outage before giving up with 1014; 0 = unlimited"`
	// Rate is the process-wide dial rate per second; 0 = unlimited.
	Rate float64 `env:"RATE" envDefault:"500" help:"upstream dials per second across the process; 0 = unlimited"`
	// OnCodes are the upstream close codes that trigger a reconnect; 1006
	// stands for a connection broken without a Close.
	OnCodes CloseCodes `env:"ON_CODES" envDefault:"1001,1006,1011,1012,1013,1014" help:"upstream close codes that trigger a reconnect"`
}

// BufferConfig bounds buffered and retained client messages. Env tags are
// relative to TETHER_BUFFER_.
type BufferConfig struct {
	MaxMessages   int   `env:"MAX_MESSAGES" envDefault:"1024" help:"client messages held (buffered while reconnecting plus retained until acknowledged)"`
	MaxBytes      int64 `env:"MAX_BYTES" envDefault:"4194304" help:"same, in bytes"`
	TotalMaxBytes int64 `env:"TOTAL_MAX_BYTES" envDefault:"268435456" help:"all sessions' buffered and retained bytes together"`
}

// CloseCodes is a set of close codes, parsed from a comma list.
type CloseCodes []CloseCode

// ParseCloseCodes parses "1001, 1006" into CloseCodes. Codes must be
// 1000–4999.
func ParseCloseCodes(s string) (CloseCodes, error) {
	var cs CloseCodes
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1000 || n > 4999 {
			return nil, fmt.Errorf("%q is not a close code (1000-4999)", f)
		}
		cs = append(cs, CloseCode(n))
	}
	return cs, nil
}

// Has reports whether c is in the set.
func (cs CloseCodes) Has(c CloseCode) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

func (cs CloseCodes) String() string {
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(c)))
	}
	return b.String()
}

// Validate checks the config and fills computed defaults. Every error
// starts with the variable's name.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxMessageBytes <= 0 {
		errs = append(errs, errors.New("TETHER_MAX_MESSAGE_BYTES: must be positive"))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("TETHER_WRITE_TIMEOUT: must be positive"))
	}
	if err := c.ClientHeartbeat.Validate("TETHER_CLIENT_HEARTBEAT_"); err != nil {
		errs = append(errs, err)
	}
	if err := c.UpstreamHeartbeat.Validate("TETHER_UPSTREAM_HEARTBEAT_"); err != nil {
		errs = append(errs, err)
	}
	if _, err := heartbeat.NewMessages(c.PingMessage, c.PongMessage); err != nil {
		errs = append(errs, err)
	}
	r := &c.Reconnect
	switch {
	case r.InitialDelay <= 0:
		errs = append(errs, errors.New("TETHER_RECONNECT_INITIAL_DELAY: must be positive"))
	case r.MaxDelay < r.InitialDelay:
		errs = append(errs, errors.New("TETHER_RECONNECT_MAX_DELAY: must be at least TETHER_RECONNECT_INITIAL_DELAY"))
	}
	if r.MaxAttempts < 0 {
		errs = append(errs, errors.New("TETHER_RECONNECT_MAX_ATTEMPTS: must be 0 (unlimited) or more"))
	}
	if r.Rate < 0 {
		errs = append(errs, errors.New("TETHER_RECONNECT_RATE: must be 0 (unlimited) or more"))
	}
	b := &c.Buffer
	if b.MaxMessages <= 0 {
		errs = append(errs, errors.New("TETHER_BUFFER_MAX_MESSAGES: must be positive"))
	}
	if b.MaxBytes <= 0 {
		errs = append(errs, errors.New("TETHER_BUFFER_MAX_BYTES: must be positive"))
	}
	if b.TotalMaxBytes < b.MaxBytes {
		errs = append(errs, errors.New("TETHER_BUFFER_TOTAL_MAX_BYTES: must be at least TETHER_BUFFER_MAX_BYTES"))
	}
	if rc := &c.Resume; rc.Window < 0 {
		errs = append(errs, errors.New("TETHER_RESUME_WINDOW: must be 0 (off) or more"))
	} else if rc.Window > 0 {
		if rc.MaxMessages <= 0 {
			errs = append(errs, errors.New("TETHER_RESUME_MAX_MESSAGES: must be positive"))
		}
		if rc.MaxBytes <= 0 {
			errs = append(errs, errors.New("TETHER_RESUME_MAX_BYTES: must be positive"))
		} else if b.TotalMaxBytes < rc.MaxBytes {
			errs = append(errs, errors.New("TETHER_BUFFER_TOTAL_MAX_BYTES: must be at least TETHER_RESUME_MAX_BYTES"))
		}
	}
	if c.ReplayFirst < 0 {
		errs = append(errs, errors.New("TETHER_REPLAY_FIRST: must be 0 or more"))
	}
	if c.ReplayDropReplies < 0 {
		errs = append(errs, errors.New("TETHER_REPLAY_DROP_REPLIES: must be 0 or more"))
	}
	if err := c.Replay.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Replay.CheckFixedReplay(c.ReplayFirst, c.ReplayDropReplies); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

package heartbeat

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Mode is a leg's heartbeat mode (README "Heartbeats").
type Mode uint8

// The heartbeat modes. The zero value is ModeOff.
const (
	ModeOff  Mode = iota // no pings sent, no liveness timeout
	ModeJSON             // TETHER_PING_MESSAGE as a text message every interval
	ModeWS               // RFC 6455 Ping frame every interval
	ModeBoth             // one of each per interval
)

var modeNames = [...]string{
	ModeOff:  "off",
	ModeJSON: "json",
	ModeWS:   "ws",
	ModeBoth: "both",
}

// ParseMode parses "json", "ws", "both" or "off" (exactly, in lower case).
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return ModeOff, fmt.Errorf("unknown mode %q (want json, ws, both or off)", s)
}

// String returns the mode's name as ParseMode accepts it, or "Mode(n)" for
// a value that is not a defined mode.
func (m Mode) String() string {
	if m.valid() {
		return modeNames[m]
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

func (m Mode) valid() bool { return int(m) < len(modeNames) }

// SendsJSON reports whether tether sends JSON pings on the leg (json or both).
func (m Mode) SendsJSON() bool { return m == ModeJSON || m == ModeBoth }

// SendsWS reports whether tether sends RFC 6455 pings on the leg (ws or both).
func (m Mode) SendsWS() bool { return m == ModeWS || m == ModeBoth }

// On reports whether the leg has heartbeats at all (pings and the liveness
// timeout); only ModeOff is off.
func (m Mode) On() bool { return m != ModeOff }

// AnswersJSON reports whether JSON pings are answered and JSON heartbeats
// consumed on the leg (json or both). On other legs JSON heartbeats are
// ordinary data and are forwarded.
func (m Mode) AnswersJSON() bool { return m.SendsJSON() }

// WithoutJSON is m with RFC 6455 pings in place of JSON pings: json and
// both become ws, ws and off stay. It is the mode of a leg whose protocol
// cannot take a message tether adds (README "Heartbeats": MQTT and STOMP).
func (m Mode) WithoutJSON() Mode {
	if m.SendsJSON() {
		return ModeWS
	}
	return m
}

// Config is one leg's heartbeat settings. main composes two of them under
// the env prefixes CLIENT_HEARTBEAT_ and UPSTREAM_HEARTBEAT_ and pre-fills
// the per-leg default Mode (client both, upstream ws) before parsing.
// Call Validate before use.
type Config struct {
	// Mode selects what tether sends. Its zero value is ModeOff: no pings
	// and no liveness timeout.
	Mode Mode `env:"MODE" help:"json, ws, both or off"`
	// Interval is the time between two pings. Default 15s; it must be
	// positive when Mode is on.
	Interval time.Duration `env:"INTERVAL" envDefault:"15s" help:"how often tether pings the peer"`
	// Timeout is how long the leg may receive nothing at all before it is
	// dead. Zero means 3 × Interval (filled in by Validate).
	Timeout time.Duration `env:"TIMEOUT" helpDefault:"3 × interval" help:"the leg is dead after this long with nothing received"`
}

// Validate checks c and fills Timeout with 3 × Interval when it is zero.
// prefix is the full env prefix of the leg, e.g. "TETHER_CLIENT_HEARTBEAT_";
// every error message begins with the name of the offending variable.
func (c *Config) Validate(prefix string) error {
	if !c.Mode.valid() {
		return fmt.Errorf("%sMODE: unknown mode %v (want json, ws, both or off)", prefix, c.Mode)
	}
	if c.Interval < 0 || (c.Interval == 0 && c.Mode.On()) {
		return fmt.Errorf("%sINTERVAL: must be positive, got %v", prefix, c.Interval)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%sTIMEOUT: must be positive, got %v", prefix, c.Timeout)
	}
	if c.Timeout == 0 {
		if c.Interval > math.MaxInt64/3 {
			c.Timeout = math.MaxInt64
		} else {
			c.Timeout = 3 * c.Interval
		}
	}
	if c.Timeout == 0 && c.Mode.On() {
		return fmt.Errorf("%sTIMEOUT: must be positive (3 × interval is 0)", prefix)
	}
	if c.Mode.On() && c.Timeout < c.Interval {
		return fmt.Errorf("%sTIMEOUT: must be at least the interval (%v), got %v", prefix, c.Interval, c.Timeout)
	}
	return nil
}

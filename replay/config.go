package replay

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Config is the replay part of the configuration (README "Configuration").
// Its env tags are relative to TETHER_, like session.Config's; main
// composes it. Zero values are not the defaults: use the envDefault tags
// or Defaults. Call Validate before use.
type Config struct {
	// Protocol is TETHER_REPLAY_PROTOCOL (default auto).
	Protocol Protocol `env:"REPLAY_PROTOCOL" envDefault:"auto" help:"which client messages rebuild the upstream's session state on a reconnect: auto, none, graphql-transport-ws, graphql-ws, stomp, mqtt, json or opaque"`
	// JSONKeep, JSONEnd and JSONReplies are the "type" values of the json
	// protocol: messages kept, messages that end a kept one (same JSONID
	// value, either way), and upstream replies kept from the client after
	// a replay (the first of each type).
	JSONKeep    []string `env:"REPLAY_JSON_KEEP" help:"json protocol: comma list of types of the client messages kept for replay"`
	JSONEnd     []string `env:"REPLAY_JSON_END" help:"json protocol: comma list of types that end a kept message with the same id, either way"`
	JSONReplies []string `env:"REPLAY_JSON_REPLIES" help:"json protocol: comma list of upstream types kept from the client (the first of each) after a replay"`
	// JSONID is the member pairing a kept message with the one ending it.
	JSONID string `env:"REPLAY_JSON_ID" envDefault:"id" help:"json protocol: the member that pairs a kept message with the message that ends it"`
	// MaxBytes bounds the state messages a session keeps.
	MaxBytes int `env:"REPLAY_MAX_BYTES" envDefault:"262144" help:"state messages a session keeps for replay; one that would pass it closes the client with 1013"`
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{Protocol: Auto, JSONID: "id", MaxBytes: 262144}
}

// Validate checks c and tidies the json lists (spaces trimmed, empty
// entries dropped). Every error starts with the variable's name.
func (c *Config) Validate() error {
	if !c.Protocol.valid() {
		return fmt.Errorf("TETHER_REPLAY_PROTOCOL: unknown protocol %v", c.Protocol)
	}
	c.JSONKeep, c.JSONEnd, c.JSONReplies = tidy(c.JSONKeep), tidy(c.JSONEnd), tidy(c.JSONReplies)
	c.JSONID = strings.TrimSpace(c.JSONID)
	if c.MaxBytes <= 0 {
		return errors.New("TETHER_REPLAY_MAX_BYTES: must be positive")
	}
	if c.JSONID == "" {
		return errors.New("TETHER_REPLAY_JSON_ID: must not be empty")
	}
	if c.Protocol == JSON && len(c.JSONKeep) == 0 {
		return errors.New("TETHER_REPLAY_JSON_KEEP: required with TETHER_REPLAY_PROTOCOL=json")
	}
	for _, t := range c.JSONEnd {
		if slices.Contains(c.JSONKeep, t) {
			return fmt.Errorf("TETHER_REPLAY_JSON_END: %q is also in TETHER_REPLAY_JSON_KEEP", t)
		}
	}
	return nil
}

// CheckFixedReplay reports the configuration error of README
// "Configuration": TETHER_REPLAY_FIRST or TETHER_REPLAY_DROP_REPLIES set
// together with an explicit protocol other than none. first and
// dropReplies are those two variables' values.
func (c *Config) CheckFixedReplay(first, dropReplies int) error {
	if c.Protocol == Auto || c.Protocol == None {
		return nil
	}
	name := ""
	switch {
	case first != 0:
		name = "TETHER_REPLAY_FIRST"
	case dropReplies != 0:
		name = "TETHER_REPLAY_DROP_REPLIES"
	default:
		return nil
	}
	return fmt.Errorf("%s: cannot be used with TETHER_REPLAY_PROTOCOL=%s (only with none or auto)", name, c.Protocol)
}

func tidy(list []string) []string {
	out := list[:0]
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

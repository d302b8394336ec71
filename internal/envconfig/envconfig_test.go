package envconfig

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/leakcheck"
	"github.com/tether-proxy/tether/session"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

type coreLeaf struct {
	Mode     heartbeat.Mode `env:"MODE" help:"mode"`
	Interval time.Duration  `env:"INTERVAL" envDefault:"15s" help:"interval"`
	Timeout  time.Duration  `env:"TIMEOUT" helpDefault:"3 × interval" help:"timeout"`
}

type coreCfg struct {
	URLs    URLList            `env:"URL,required" help:"urls"`
	Addr    string             `env:"ADDR" envDefault:":8080" help:"addr"`
	N       int                `env:"N" envDefault:"7" help:"n"`
	Big     int64              `env:"BIG" envDefault:"4194304" help:"big"`
	Rate    float64            `env:"RATE" envDefault:"500" help:"rate"`
	On      bool               `env:"ON" envDefault:"false" help:"on"`
	Wait    time.Duration      `env:"WAIT" envDefault:"10s" help:"wait"`
	Codes   session.CloseCodes `env:"CODES" envDefault:"1001,1006" help:"codes"`
	List    []string           `env:"LIST" help:"list"`
	Client  coreLeaf           `envPrefix:"CLIENT_"`
	Upperly coreLeaf           `envPrefix:"UP_"`
}

func coreParse(t *testing.T, env map[string]string) (coreCfg, error) {
	t.Helper()
	var c coreCfg
	c.Client.Mode = heartbeat.ModeBoth // a pre-filled default, as main does
	err := Parse(&c, env)
	return c, err
}

func TestCoreParseDefaultsAndValues(t *testing.T) {
	t.Parallel()
	c, err := coreParse(t, map[string]string{"TETHER_URL": "ws://a:1/x, wss://b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.URLs) != 2 || c.URLs[0].Host != "a:1" || c.URLs[1].Scheme != "wss" {
		t.Errorf("URLs = %v", c.URLs)
	}
	if c.Addr != ":8080" || c.N != 7 || c.Big != 4194304 || c.Rate != 500 || c.On || c.Wait != 10*time.Second {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.Codes.String() != "1001,1006" || c.Client.Mode != heartbeat.ModeBoth || c.Upperly.Mode != heartbeat.ModeOff {
		t.Errorf("codes %v, modes %v %v", c.Codes, c.Client.Mode, c.Upperly.Mode)
	}

	c, err = coreParse(t, map[string]string{
		"TETHER_URL": "ws://a", "TETHER_ADDR": "127.0.0.1:1", "TETHER_N": "3", "TETHER_ON": "true",
		"TETHER_WAIT": "250ms", "TETHER_CODES": "4000", "TETHER_LIST": "a,b", "TETHER_CLIENT_MODE": "json",
		"TETHER_UP_MODE": "ws", "TETHER_UP_INTERVAL": "1s", "OTHER_N": "9",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:1" || c.N != 3 || !c.On || c.Wait != 250*time.Millisecond || c.Codes.String() != "4000" ||
		strings.Join(c.List, "|") != "a|b" || c.Client.Mode != heartbeat.ModeJSON || c.Upperly.Mode != heartbeat.ModeWS ||
		c.Upperly.Interval != time.Second {
		t.Errorf("values not applied: %+v", c)
	}
}

// README "Configuration": an empty value counts as unset.
func TestCoreParseEmptyIsUnset(t *testing.T) {
	t.Parallel()
	c, err := coreParse(t, map[string]string{
		"TETHER_URL": "ws://a", "TETHER_ADDR": "", "TETHER_N": "", "TETHER_WAIT": "", "TETHER_CLIENT_MODE": "", "TETHER_CODES": "",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.N != 7 || c.Wait != 10*time.Second || c.Client.Mode != heartbeat.ModeBoth || c.Codes.String() != "1001,1006" {
		t.Errorf("empty values did not leave the defaults: %+v", c)
	}
	_, err = coreParse(t, map[string]string{"TETHER_URL": ""})
	var ve *VarError
	if !errors.As(err, &ve) || ve.Key != "TETHER_URL" {
		t.Errorf("empty required variable: %v, want a VarError for TETHER_URL", err)
	}
}

// README "Configuration": every error is one line naming the variable.
func TestCoreParseErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key, val string
	}{
		{"TETHER_URL", "http://x"},
		{"TETHER_URL", "ws://"},
		{"TETHER_URL", "ws://a/#frag"},
		{"TETHER_URL", " , "},
		{"TETHER_N", "abc"},
		{"TETHER_N", "1.5"},
		{"TETHER_BIG", "1e3"},
		{"TETHER_RATE", "fast"},
		{"TETHER_ON", "yes please"},
		{"TETHER_WAIT", "abc"},
		{"TETHER_WAIT", "10"},
		{"TETHER_WAIT", "-1s"},
		{"TETHER_CODES", "99"},
		{"TETHER_CODES", "1001,x"},
		{"TETHER_CLIENT_MODE", "loud"},
		{"TETHER_UP_INTERVAL", "soon"},
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.val, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"TETHER_URL": "ws://a"}
			env[tc.key] = tc.val
			_, err := coreParse(t, env)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), tc.key+": ") {
				t.Errorf("error %q does not start with %s", err, tc.key)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q has more than one line", err)
			}
			var ve *VarError
			if !errors.As(err, &ve) || ve.Key != tc.key {
				t.Errorf("error %v is not a VarError for %s", err, tc.key)
			}
		})
	}
	_, err := coreParse(t, map[string]string{})
	if err == nil || !strings.HasPrefix(err.Error(), "TETHER_URL: ") {
		t.Errorf("missing required variable: %v", err)
	}
}

func TestCoreParseURLList(t *testing.T) {
	t.Parallel()
	us, err := ParseURLList("ws://u:secret@a:1/p?q=1,wss://b")
	if err != nil {
		t.Fatal(err)
	}
	if got := us.String(); strings.Contains(got, "secret") || !strings.Contains(got, "wss://b") {
		t.Errorf("String() = %q, want the password redacted", got)
	}
	for _, bad := range []string{"", "http://a", "ws:///path", "ws://a#f", "::"} {
		if _, err := ParseURLList(bad); err == nil {
			t.Errorf("ParseURLList(%q) accepted", bad)
		}
	}
}

func TestCoreVarsAndHelp(t *testing.T) {
	t.Parallel()
	var c coreCfg
	c.Client.Mode = heartbeat.ModeBoth
	vars := Vars(&c)
	want := map[string]string{
		"TETHER_URL": "(required)", "TETHER_ADDR": ":8080", "TETHER_N": "7", "TETHER_BIG": "4194304", "TETHER_RATE": "500",
		"TETHER_ON": "false", "TETHER_WAIT": "10s", "TETHER_CODES": "1001,1006", "TETHER_LIST": "",
		"TETHER_CLIENT_MODE": "both", "TETHER_CLIENT_INTERVAL": "15s", "TETHER_CLIENT_TIMEOUT": "3 × interval",
		"TETHER_UP_MODE": "off", "TETHER_UP_INTERVAL": "15s", "TETHER_UP_TIMEOUT": "3 × interval",
	}
	if len(vars) != len(want) {
		t.Errorf("Vars lists %d variables, want %d: %+v", len(vars), len(want), vars)
	}
	for _, v := range vars {
		def, ok := want[v.Key]
		if !ok {
			t.Errorf("unexpected variable %s", v.Key)
			continue
		}
		if v.Default != def {
			t.Errorf("%s default %q, want %q", v.Key, v.Default, def)
		}
		if v.Help == "" {
			t.Errorf("%s has no help", v.Key)
		}
	}
	var b strings.Builder
	if err := WriteHelp(&b, &c); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != len(want)+1 {
		t.Errorf("help has %d lines, want a header and %d variables:\n%s", len(lines), len(want), b.String())
	}
	for _, line := range lines[1:] {
		key, rest, _ := strings.Cut(line, " ")
		def, ok := want[key]
		if !ok {
			t.Errorf("help line %q names no variable", line)
			continue
		}
		if def == "" {
			def = "(empty)"
		}
		if !strings.HasPrefix(strings.TrimSpace(rest), def+"  ") {
			t.Errorf("help line %q: want the default %q after the name", line, def)
		}
	}
}

// InForce shows the values held now, with URLs' userinfo and query
// values redacted (a user name can be a token too).
func TestCoreInForce(t *testing.T) {
	t.Parallel()
	c, err := coreParse(t, map[string]string{
		"TETHER_URL":  "wss://alice:s3cret@b.example:9000/socket?token=t0ken&room=1,ws://tok@c/",
		"TETHER_N":    "9",
		"TETHER_LIST": "x,y",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range InForce(&c) {
		got[v.Key] = v.Default
	}
	want := map[string]string{
		"TETHER_URL":  "wss://redacted@b.example:9000/socket?room=redacted&token=redacted,ws://redacted@c/",
		"TETHER_ADDR": ":8080", "TETHER_N": "9", "TETHER_ON": "false", "TETHER_RATE": "500", "TETHER_WAIT": "10s",
		"TETHER_CODES": "1001,1006", "TETHER_LIST": "x,y", "TETHER_CLIENT_MODE": "both", "TETHER_UP_MODE": "off",
		"TETHER_CLIENT_TIMEOUT": "0s",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for k, v := range got {
		for _, secret := range []string{"alice", "s3cret", "t0ken", "tok@"} {
			if strings.Contains(v, secret) {
				t.Errorf("%s = %q shows %q", k, v, secret)
			}
		}
	}
}

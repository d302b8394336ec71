package heartbeat

import (
	"strings"
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{in: "off", want: ModeOff},
		{in: "json", want: ModeJSON},
		{in: "ws", want: ModeWS},
		{in: "both", want: ModeBoth},
		{in: "", wantErr: true},
		{in: "JSON", wantErr: true},
		{in: " ws", wantErr: true},
		{in: "none", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseMode(tt.in)
			if tt.wantErr {
				want := `unknown mode "` + tt.in + `" (want json, ws, both or off)`
				if err == nil || err.Error() != want {
					t.Fatalf("ParseMode(%q) error = %v, want %q", tt.in, err, want)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMode(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("%v.String() = %q, want %q", got, got.String(), tt.in)
			}
		})
	}
	if got := Mode(9).String(); got != "Mode(9)" {
		t.Errorf("Mode(9).String() = %q", got)
	}
}

func TestModePredicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		m                                 Mode
		sendsJSON, sendsWS, on, answersJS bool
		withoutJSON                       Mode
	}{
		{ModeOff, false, false, false, false, ModeOff},
		{ModeJSON, true, false, true, true, ModeWS},
		{ModeWS, false, true, true, false, ModeWS},
		{ModeBoth, true, true, true, true, ModeWS},
	}
	for _, tt := range tests {
		t.Run(tt.m.String(), func(t *testing.T) {
			t.Parallel()
			if got := tt.m.SendsJSON(); got != tt.sendsJSON {
				t.Errorf("SendsJSON() = %v", got)
			}
			if got := tt.m.SendsWS(); got != tt.sendsWS {
				t.Errorf("SendsWS() = %v", got)
			}
			if got := tt.m.On(); got != tt.on {
				t.Errorf("On() = %v", got)
			}
			if got := tt.m.AnswersJSON(); got != tt.answersJS {
				t.Errorf("AnswersJSON() = %v", got)
			}
			if got := tt.m.WithoutJSON(); got != tt.withoutJSON {
				t.Errorf("WithoutJSON() = %v, want %v", got, tt.withoutJSON)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	const prefix = "TETHER_CLIENT_HEARTBEAT_"
	tests := []struct {
		name        string
		in          Config
		wantTimeout time.Duration
		wantErr     string // prefix of the error; empty: no error
	}{
		{name: "default timeout", in: Config{Mode: ModeBoth, Interval: 15 * time.Second}, wantTimeout: 45 * time.Second},
		{name: "explicit timeout", in: Config{Mode: ModeWS, Interval: 15 * time.Second, Timeout: 20 * time.Second}, wantTimeout: 20 * time.Second},
		{name: "timeout equal to interval", in: Config{Mode: ModeJSON, Interval: time.Second, Timeout: time.Second}, wantTimeout: time.Second},
		{name: "off short timeout", in: Config{Mode: ModeOff, Interval: 15 * time.Second, Timeout: time.Second}, wantTimeout: time.Second},
		{name: "off default timeout", in: Config{Mode: ModeOff, Interval: time.Second}, wantTimeout: 3 * time.Second},
		{name: "huge interval", in: Config{Mode: ModeWS, Interval: 1 << 62}, wantTimeout: 1<<63 - 1},
		{name: "zero interval", in: Config{Mode: ModeWS}, wantErr: prefix + "INTERVAL: must be positive"},
		{name: "negative interval", in: Config{Mode: ModeBoth, Interval: -time.Second}, wantErr: prefix + "INTERVAL: must be positive"},
		{name: "negative interval off", in: Config{Mode: ModeOff, Interval: -time.Second}, wantErr: prefix + "INTERVAL: must be positive"},
		{name: "negative timeout", in: Config{Mode: ModeWS, Interval: time.Second, Timeout: -time.Second}, wantErr: prefix + "TIMEOUT: must be positive"},
		{name: "negative timeout off", in: Config{Mode: ModeOff, Interval: time.Second, Timeout: -time.Second}, wantErr: prefix + "TIMEOUT: must be positive"},
		{name: "timeout below interval", in: Config{Mode: ModeJSON, Interval: 10 * time.Second, Timeout: 5 * time.Second}, wantErr: prefix + "TIMEOUT: must be at least the interval"},
		{name: "unknown mode", in: Config{Mode: 7, Interval: time.Second}, wantErr: prefix + "MODE: unknown mode Mode(7)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := tt.in
			err := c.Validate(prefix)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("Validate() = %v, want an error starting with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if c.Timeout != tt.wantTimeout {
				t.Errorf("Timeout = %v, want %v", c.Timeout, tt.wantTimeout)
			}
			if c.Mode != tt.in.Mode || c.Interval != tt.in.Interval {
				t.Errorf("Validate changed Mode or Interval: %+v", c)
			}
		})
	}
}

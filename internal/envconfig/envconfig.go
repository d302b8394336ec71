// Package envconfig parses tether's configuration structs from an
// environment map with github.com/caarlos0/env/v10 and prints their help.
//
// It exists so that a parse error names the variable (README "Configuration":
// "one line naming the variable and the problem"): v10's ParseError names the
// Go field, so every leaf type is parsed through a FuncMap entry that wraps
// its error with the key recorded by the OnSet hook, which v10 calls just
// before it parses each field.
package envconfig

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v10"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/replay"
	"github.com/tether-proxy/tether/session"
)

// Prefix is the prefix of every variable.
const Prefix = "TETHER_"

// VarError is a problem with one variable.
type VarError struct {
	Key string
	Err error
}

func (e *VarError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *VarError) Unwrap() error { return e.Err }

// URLList is a comma-separated list of ws:// or wss:// URLs.
type URLList []*url.URL

// ParseURLList parses a comma-separated list of WebSocket URLs.
func ParseURLList(s string) (URLList, error) {
	var us URLList
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		u, err := url.Parse(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a URL", f)
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return nil, fmt.Errorf("%q: scheme must be ws or wss", f)
		}
		if u.Host == "" || u.Hostname() == "" {
			return nil, fmt.Errorf("%q has no host", f)
		}
		if u.Fragment != "" {
			return nil, fmt.Errorf("%q: a fragment is not allowed", f)
		}
		us = append(us, u)
	}
	if len(us) == 0 {
		return nil, errors.New("no URL given")
	}
	return us, nil
}

// Secretless returns the URLs with their userinfo and the values of
// their query parameters replaced by "redacted", where a password or a
// token would be (url.URL.Redacted keeps the user name and the query).
func (us URLList) Secretless() string {
	s := make([]string, len(us))
	for i, u := range us {
		c := *u
		if c.User != nil {
			c.User = url.User("redacted")
		}
		if c.RawQuery != "" {
			q := c.Query()
			for k := range q {
				q[k] = []string{"redacted"}
			}
			c.RawQuery = q.Encode()
		}
		s[i] = c.String()
	}
	return strings.Join(s, ",")
}

func (us URLList) String() string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = u.Redacted()
	}
	return strings.Join(s, ",")
}

// Parse fills dst (a pointer to a struct) from environ, where variables
// are TETHER_-prefixed. An empty value counts as unset. The first problem
// is returned as a *VarError.
func Parse(dst any, environ map[string]string) error {
	var key string
	wrap := func(f func(string) (any, error)) env.ParserFunc {
		return func(v string) (any, error) {
			x, err := f(v)
			if err != nil {
				return nil, &VarError{Key: key, Err: err}
			}
			return x, nil
		}
	}
	funcs := map[reflect.Type]env.ParserFunc{
		reflect.TypeOf(time.Duration(0)): wrap(func(v string) (any, error) {
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("%q is not a duration (e.g. 250ms, 15s)", v)
			}
			if d < 0 {
				return nil, fmt.Errorf("%q is negative", v)
			}
			return d, nil
		}),
		reflect.TypeOf(0): wrap(func(v string) (any, error) {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("%q is not an integer", v)
			}
			return n, nil
		}),
		reflect.TypeOf(int64(0)): wrap(func(v string) (any, error) {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not an integer", v)
			}
			return n, nil
		}),
		reflect.TypeOf(float64(0)): wrap(func(v string) (any, error) {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a number", v)
			}
			return n, nil
		}),
		reflect.TypeOf(false): wrap(func(v string) (any, error) {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%q is not a boolean (true or false)", v)
			}
			return b, nil
		}),
		reflect.TypeOf(heartbeat.ModeOff):       wrap(func(v string) (any, error) { return heartbeat.ParseMode(v) }),
		reflect.TypeOf(session.CloseCodes(nil)): wrap(func(v string) (any, error) { return session.ParseCloseCodes(v) }),
		reflect.TypeOf(replay.Auto):             wrap(func(v string) (any, error) { return replay.ParseProtocol(v) }),
		reflect.TypeOf(URLList(nil)):            wrap(func(v string) (any, error) { return ParseURLList(v) }),
	}
	// v10 treats a set-but-empty variable as set for `required`; tether
	// counts empty as unset (README "Configuration"), so drop empty values first.
	clean := make(map[string]string, len(environ))
	for k, v := range environ {
		if v != "" {
			clean[k] = v
		}
	}
	err := env.ParseWithOptions(dst, env.Options{
		Prefix:      Prefix,
		Environment: clean,
		FuncMap:     funcs,
		OnSet:       func(tag string, _ any, _ bool) { key = tag },
	})
	if err == nil {
		return nil
	}
	// v10's AggregateError and ParseError have no Unwrap: take the first
	// problem out by hand so that errors.As below can see it.
	if agg, ok := err.(env.AggregateError); ok && len(agg.Errors) > 0 {
		err = agg.Errors[0]
	}
	if pe, ok := err.(env.ParseError); ok && pe.Err != nil {
		err = pe.Err
	}
	var ve *VarError
	if errors.As(err, &ve) {
		return ve
	}
	var unset env.EnvVarIsNotSetError
	if errors.As(err, &unset) {
		return &VarError{Key: unset.Key, Err: errors.New("required, not set")}
	}
	var empty env.EmptyEnvVarError
	if errors.As(err, &empty) {
		return &VarError{Key: empty.Key, Err: errors.New("required, not set")}
	}
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		return firstLine(agg.Errors[0])
	}
	return firstLine(err)
}

func firstLine(err error) error {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return errors.New(s)
}

// Var is one variable of a config struct, for help output and tests.
type Var struct {
	Key     string
	Default string
	Help    string
}

// Vars lists the variables of the struct pointed to by cfg, in field
// order, with the value each field holds now as its default (so
// pre-filled per-leg defaults show) unless an envDefault tag says more.
// A helpDefault tag names a computed default ("3 × interval"); a required
// variable shows "(required)".
func Vars(cfg any) []Var {
	var out []Var
	walk(reflect.ValueOf(cfg).Elem(), Prefix, false, &out)
	return out
}

// InForce lists the variables of the struct pointed to by cfg, in field
// order, with the value each field holds now in Default (an empty list
// or string as ""), for showing the configuration in force: URLs are
// shown Secretless.
func InForce(cfg any) []Var {
	var out []Var
	walk(reflect.ValueOf(cfg).Elem(), Prefix, true, &out)
	return out
}

func walk(v reflect.Value, prefix string, current bool, out *[]Var) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fv := v.Field(i)
		key, hasKey := f.Tag.Lookup("env")
		if !hasKey {
			if f.Type.Kind() == reflect.Struct {
				walk(fv, prefix+f.Tag.Get("envPrefix"), current, out)
			}
			continue
		}
		name := strings.Split(key, ",")[0]
		help := f.Tag.Get("help")
		if current {
			*out = append(*out, Var{Key: prefix + name, Default: inForceString(fv), Help: help})
			continue
		}
		def, ok := f.Tag.Lookup("envDefault")
		if !ok {
			def = valueString(fv)
		}
		if hd, ok := f.Tag.Lookup("helpDefault"); ok {
			def = hd // a computed default, e.g. "3 × interval"
		} else if strings.Contains(key, ",required") {
			def = "(required)"
		}
		*out = append(*out, Var{Key: prefix + name, Default: def, Help: help})
	}
}

func inForceString(v reflect.Value) string {
	if us, ok := v.Interface().(URLList); ok {
		return us.Secretless()
	}
	if v.Kind() == reflect.Slice {
		return valueString(v)
	}
	return fmt.Sprint(v.Interface())
}

func valueString(v reflect.Value) string {
	if s, ok := v.Interface().(fmt.Stringer); ok {
		if v.Kind() == reflect.Slice && v.Len() == 0 {
			return ""
		}
		return s.String()
	}
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return strings.Join(parts, ",")
	case reflect.Int, reflect.Int64:
		if v.Int() == 0 {
			return "0"
		}
	}
	if v.IsZero() {
		return ""
	}
	return fmt.Sprint(v.Interface())
}

// WriteHelp prints every variable with its default and help, one a line.
func WriteHelp(w io.Writer, cfg any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	for _, v := range Vars(cfg) {
		def := v.Default
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Key, def, v.Help)
	}
	return tw.Flush()
}

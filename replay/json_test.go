package replay

import (
	"fmt"
	"testing"
)

func jsonTestRules(c *Config) {
	c.JSONKeep = []string{"auth", "subscribe"}
	c.JSONEnd = []string{"unsubscribe", "subscription_ended"}
	c.JSONReplies = []string{"auth_ok", "subscribed"}
}

func jsonSess(t testing.TB, mutate ...func(*Config)) *sess {
	return newSess(t, JSON, append([]func(*Config){jsonTestRules}, mutate...)...)
}

const (
	jsAuth    = `{"type":"auth","token":"eyJhbGciOi"}`
	jsSubA    = `{"type":"subscribe","id":"a","channel":"prices"}`
	jsSubB    = `{"type":"subscribe","id":17,"channel":"news"}`
	jsSubC    = `{"type":"subscribe","id":"c","channel":"chat"}`
	jsUnsubA  = `{"type":"unsubscribe","id":"a"}`
	jsEndedC  = `{"id":"c","type":"subscription_ended","reason":"expired"}`
	jsAuthOK  = `{"type":"auth_ok","user":"alice"}`
	jsSubOK   = `{"type":"subscribed","id":"a"}`
	jsEvent   = `{"type":"event","id":"a","data":{"price":1.5}}`
	jsPublish = `{"type":"publish","channel":"chat","text":"hi"}`
)

const (
	jsAuth2 = `{"type":"auth","token":"other"}`
	jsSubA2 = `{"type":"subscribe","id":"a","channel":"prices","depth":5}`
)

func TestJSON(t *testing.T) {
	runPlanCases(t, JSON, []planCase{
		{"keep and end", steps(cls(jsAuth, jsSubA, jsSubB, jsSubC, jsPublish, jsUnsubA), ups(jsAuthOK, jsSubOK, jsEvent, jsEndedC)),
			nil, []string{jsAuth, jsSubB}},
		{"resubscribe after end", cls(jsAuth, jsSubA, jsUnsubA, jsSubC, jsSubA), nil, []string{jsAuth, jsSubC, jsSubA}},
		{"without id stays, the same bytes kept once", cls(jsAuth, jsSubA, jsAuth, `{"type":"unsubscribe"}`, jsAuth2),
			nil, []string{jsAuth, jsSubA, jsAuth2}},
		{"same type and id replaces", cls(jsSubA, jsSubC, jsSubA2), nil, []string{jsSubC, jsSubA2}},
	}, jsonTestRules)
	t.Run("number ids as written, string ids as decoded", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsSubA, jsSubB, `{"type":"unsubscribe","id":"17"}`, `{"type":"unsubscribe","id":17.0}`)
		wantPlan(t, h.replay(), nil, jsSubA, jsSubB)
		h.text(`{"type":"unsubscribe","id":"\u0061"}`, `{"type":"unsubscribe","id":17}`)
		wantPlan(t, h.replay(), nil)
	})
	t.Run("replies dropped once each", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsAuth, jsSubA)
		h.replay()
		h.upPass(Text, jsEvent)
		h.upWant(Text, jsSubOK, true, EventNone)
		h.upWant(Text, jsAuthOK, true, EventNone)
		h.upPass(Text, jsSubOK, jsAuthOK)
	})
	t.Run("no replies dropped after an empty replay", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsPublish)
		wantPlan(t, h.replay(), nil)
		h.upPass(Text, jsAuthOK)
	})
	t.Run("custom id member", func(t *testing.T) {
		h := jsonSess(t, func(c *Config) { c.JSONID = "channel" })
		h.text(jsSubA, jsSubC, `{"type":"unsubscribe","channel":"prices"}`)
		wantPlan(t, h.replay(), nil, jsSubC)
	})
	t.Run("malformed passes", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsSubA,
			`{"type":"subscribe","id":"b"`, `{"type":"unsubscribe","id":"a"`, `{"type":"unsubscribe","id":"a"}}`,
			`{"type":subscribe}`, `"subscribe"`, ``, "\x00", `{"type":"unsubscribe","id":{"a":1}}`)
		h.upPass(Text, `{"type":"subscription_ended","id":"a"`, `[`, `{"id":"a","type":"subscription_ended"} {`)
		wantPlan(t, h.replay(), nil, jsSubA)
	})
	t.Run("max bytes", func(t *testing.T) {
		h := jsonSess(t, func(c *Config) { c.MaxBytes = 1000 })
		overflow(t, h, Text, func(i int) string { return fmt.Sprintf(`{"type":"subscribe","id":%d}`, i) })
	})
}

package replay

import (
	"fmt"
	"testing"
)

func jsonSess(t testing.TB, mutate ...func(*Config)) *sess {
	return newSess(t, JSON, append([]func(*Config){func(c *Config) {
		c.JSONKeep = []string{"auth", "subscribe"}
		c.JSONEnd = []string{"unsubscribe", "subscription_ended"}
		c.JSONReplies = []string{"auth_ok", "subscribed"}
	}}, mutate...)...)
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

func TestJSON(t *testing.T) {
	t.Run("keep and end", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsAuth, jsSubA, jsSubB, jsSubC, jsPublish, jsUnsubA)
		h.upPass(Text, jsAuthOK, jsSubOK, jsEvent, jsEndedC)
		wantPlan(t, h.replay(), nil, jsAuth, jsSubB)
	})
	t.Run("number ids as written, string ids as decoded", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsSubA, jsSubB, `{"type":"unsubscribe","id":"17"}`, `{"type":"unsubscribe","id":17.0}`)
		wantPlan(t, h.replay(), nil, jsSubA, jsSubB)
		h.text(`{"type":"unsubscribe","id":"\u0061"}`, `{"type":"unsubscribe","id":17}`)
		wantPlan(t, h.replay(), nil)
	})
	t.Run("resubscribe after end", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsAuth, jsSubA, jsUnsubA, jsSubC, jsSubA)
		wantPlan(t, h.replay(), nil, jsAuth, jsSubC, jsSubA)
	})
	t.Run("without id stays; the same bytes kept once", func(t *testing.T) {
		h := jsonSess(t)
		h.text(jsAuth, jsSubA, jsAuth, `{"type":"unsubscribe"}`, `{"type":"auth","token":"other"}`)
		wantPlan(t, h.replay(), nil, jsAuth, jsSubA, `{"type":"auth","token":"other"}`)
	})
	t.Run("same type and id replaces", func(t *testing.T) {
		h := jsonSess(t)
		a2 := `{"type":"subscribe","id":"a","channel":"prices","depth":5}`
		h.text(jsSubA, jsSubC, a2)
		wantPlan(t, h.replay(), nil, jsSubC, a2)
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

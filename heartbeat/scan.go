package heartbeat

import "github.com/tether-proxy/tether/internal/jsonscan"

// The JSON scanner lives in internal/jsonscan (shared with the replay
// recognisers); these names keep this package's code short.

const maxDepth = jsonscan.MaxDepth

func skipSpace(p []byte, i int) int                 { return jsonscan.SkipSpace(p, i) }
func skipValue(p []byte, i int) (int, bool)         { return jsonscan.SkipValue(p, i) }
func stringEqual(raw []byte, s string) bool         { return jsonscan.StringEqual(raw, s) }
func stringsEqual(a, b []byte) bool                 { return jsonscan.StringsEqual(a, b) }
func newMembers(p []byte) members                   { return members{jsonscan.NewMembers(p)} }
func (m *members) next() (key, val []byte, ok bool) { return m.Next() }
func (m *members) valid() bool                      { return m.Valid() }

// members iterates over the members of a top-level JSON object.
type members struct{ jsonscan.Members }

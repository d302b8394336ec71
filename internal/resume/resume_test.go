package resume

import (
	"strings"
	"sync"
	"testing"
)

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		tok, key := NewToken()
		if len(tok) != 24 || strings.ContainsAny(tok, "+/=") {
			t.Fatalf("token %q: want 24 URL-safe characters", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q issued twice", tok)
		}
		seen[tok] = true
		if key != KeyOf(tok) {
			t.Fatal("key is not the token's digest")
		}
	}
}

func TestTableSingleUse(t *testing.T) {
	var tb Table[int]
	tok, key := NewToken()
	tb.Put(key, 7)
	if _, _, ok := tb.Lookup(tok[:len(tok)-1]); ok {
		t.Fatal("a prefix of the token was found")
	}
	s, k, ok := tb.Lookup(tok)
	if !ok || s != 7 || k != key {
		t.Fatalf("Lookup = %d, %v", s, ok)
	}
	next, nextKey := NewToken()
	if !tb.Swap(k, nextKey, 7) {
		t.Fatal("Swap of a live token failed")
	}
	if _, _, ok := tb.Lookup(tok); ok {
		t.Fatal("a used token still works")
	}
	if tb.Swap(k, nextKey, 7) {
		t.Fatal("a used token was swapped again")
	}
	if s, _, ok := tb.Lookup(next); !ok || s != 7 {
		t.Fatal("the next token does not work")
	}
	tb.Delete(nextKey)
	if _, _, ok := tb.Lookup(next); ok || tb.Len() != 0 {
		t.Fatal("a deleted token still works")
	}
}

// TestTableConcurrentResume: of many resumes racing with one token,
// exactly one wins.
func TestTableConcurrentResume(t *testing.T) {
	var tb Table[int]
	tok, key := NewToken()
	tb.Put(key, 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, k, ok := tb.Lookup(tok)
			if !ok {
				return
			}
			_, next := NewToken()
			if tb.Swap(k, next, 1) {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 || tb.Len() != 1 {
		t.Fatalf("%d winners and %d live tokens, want 1 and 1", wins, tb.Len())
	}
}

// TestGuessesCostNoMemory: failed lookups allocate nothing and keep
// nothing.
func TestGuessesCostNoMemory(t *testing.T) {
	var tb Table[int]
	_, key := NewToken()
	tb.Put(key, 1)
	guess := "AAAAAAAAAAAAAAAAAAAAAAAA"
	if n := testing.AllocsPerRun(1000, func() { tb.Lookup(guess) }); n != 0 {
		t.Fatalf("a guessed token allocates %v times", n)
	}
	if tb.Len() != 1 {
		t.Fatalf("table holds %d entries after the guesses", tb.Len())
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, rest string
		want     Request
		bad      bool
	}{
		{"", "", Request{}, false},
		{"a=1&b=2", "a=1&b=2", Request{}, false},
		{"tether_resume=new", "", Request{New: true}, false},
		{"x=1&tether_resume=new&y=%20z", "x=1&y=%20z", Request{New: true}, false},
		{"tether_resume=abc_DEF-1&tether_ack=42&room=7", "room=7", Request{Token: "abc_DEF-1", Ack: 42, HasAck: true}, false},
		{"tether%5Fresume=new&a=b", "a=b", Request{New: true}, false}, // an encoded name is still tether's
		{"tether_other=1&tether_=2&tetherx=3", "tetherx=3", Request{}, false},
		{"tether_ack=-1&tether_resume=t", "", Request{Token: "t"}, true},
		{"tether_ack=99999999999999999999999", "", Request{}, true},
		{"a&tether_resume=new&&b", "a&&b", Request{New: true}, false},
		{"%zz=1&tether_resume=new", "%zz=1", Request{New: true}, false}, // undecodable names pass through
		{"tether_%zz=1&a=2", "a=2", Request{}, false},                   // unless they are tether's
	} {
		req, rest, err := Parse(tc.in)
		if rest != tc.rest || req != tc.want || (err != nil) != tc.bad {
			t.Errorf("Parse(%q) = %+v, %q, %v; want %+v, %q, bad=%v", tc.in, req, rest, err, tc.want, tc.rest, tc.bad)
		}
	}
}

func TestParseNoTetherAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Parse("room=7&user=alice") }); n != 0 {
		t.Fatalf("a query without tether parameters allocates %v times", n)
	}
}

func FuzzResumeQuery(f *testing.F) {
	for _, s := range []string{"", "a=1", "tether_resume=new", "tether_resume=x&tether_ack=3&a=b", "tether%5Fack=1", "%zz&tether_resume"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		_, rest, _ := Parse(q)
		// Nothing tether owns survives, and nothing else is lost.
		for part := range strings.SplitSeq(rest, "&") {
			name, _, _ := strings.Cut(part, "=")
			if strings.HasPrefix(name, Prefix) {
				t.Fatalf("Parse(%q) left %q", q, part)
			}
		}
		if len(rest) > len(q) {
			t.Fatalf("Parse(%q) grew the query to %q", q, rest)
		}
	})
}

package ctxtime

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		start := time.Now()
		if !Sleep(ctx, time.Second) || time.Since(start) != time.Second {
			t.Fatalf("Sleep(1s) returned after %v, want true after 1s", time.Since(start))
		}
		if !Sleep(ctx, 0) || !Sleep(ctx, -time.Second) {
			t.Fatal("a zero or negative sleep did not pass")
		}
		time.AfterFunc(time.Second, cancel)
		start = time.Now()
		if Sleep(ctx, time.Hour) || time.Since(start) != time.Second {
			t.Fatalf("Sleep(1h) cancelled after 1s returned true or after %v", time.Since(start))
		}
		if Sleep(ctx, 0) {
			t.Fatal("a zero sleep passed after the context ended")
		}
	})
}

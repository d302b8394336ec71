package client

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestNode runs the JavaScript unit tests (tether.test.mjs) with Node's
// built-in runner. Without node on PATH it skips, except under CI=true,
// where a missing node is a failure: CI must run these tests.
func TestNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node not found on PATH (CI=true requires it to run client/tether.test.mjs): %v", err)
		}
		t.Skipf("node not found on PATH, skipping client/tether.test.mjs (install Node.js >= 20 to run it): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "tether.test.mjs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test tether.test.mjs: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

// TestFiles checks that every file the demo serves is embedded and not
// empty.
func TestFiles(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"tether.js", "tether.d.ts", "demo.html", "demo.css", "demo.js"} {
		b, err := fs.ReadFile(Files, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(b) == 0 {
			t.Errorf("%s is empty", name)
		}
	}
}

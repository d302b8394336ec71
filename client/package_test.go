package client_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-proxy/tether/demo"
	"github.com/tether-proxy/tether/internal/testkit"
)

// packageJSON is what the tests read of client/package.json.
type packageJSON struct {
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Type         string            `json:"type"`
	Types        string            `json:"types"`
	Files        []string          `json:"files"`
	Dependencies map[string]string `json:"dependencies"`
	Exports      map[string]any    `json:"exports"`
}

func readPackageJSON(t *testing.T) packageJSON {
	t.Helper()
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var p packageJSON
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	return p
}

// README "Version": the npm package's version is tether's, the VERSION
// file at the repository's root.
func TestPackageVersionIsTethers(t *testing.T) {
	t.Parallel()
	v, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if p := readPackageJSON(t); p.Version != strings.TrimSpace(string(v)) {
		t.Errorf("client/package.json version %q, VERSION %q: change both together", p.Version, strings.TrimSpace(string(v)))
	}
}

// README "Browser client": client/ is an npm package. It is packed with
// npm, installed from the tarball into a fresh project, imported by its
// name from Node to talk through a live tether to an echo backend, and
// type-checked by name from TypeScript (client/pkgtest).
func TestNpmPackage(t *testing.T) {
	t.Parallel()
	p := readPackageJSON(t)
	dot, _ := p.Exports["."].(map[string]any)
	if p.Type != "module" || p.Types != "./tether.d.ts" || dot["types"] != "./tether.d.ts" || dot["default"] != "./tether.js" || len(p.Dependencies) != 0 {
		t.Errorf("package.json: type %q, types %q, exports[\".\"] %v, dependencies %v; want an ES module exporting tether.js with the types tether.d.ts, and no dependencies", p.Type, p.Types, dot, p.Dependencies)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		testkit.Missing(t, "node not found on PATH; install Node.js >= 20 and npm (`apt-get install -y nodejs npm`) to test the npm package")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		testkit.Missing(t, "npm not found on PATH; install it with `apt-get install -y npm` to test the npm package")
	}
	tsc, err := filepath.Abs("pkgtest/node_modules/typescript/bin/tsc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tsc); err != nil {
		testkit.Missing(t, "TypeScript is not installed in client/pkgtest; run `(cd client/pkgtest && npm ci)` to type-check the npm package")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	// npm's own cache and logs stay in the test's directory; nothing is
	// fetched from a registry.
	env := append(os.Environ(), "npm_config_cache="+filepath.Join(tmp, "npm-cache"), "npm_config_update_notifier=false", "npm_config_audit=false", "npm_config_fund=false")
	run := func(dir, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = dir, env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.String())
		}
		return out
	}

	out := run(".", npm, "pack", "--json", "--pack-destination", tmp)
	var packed []struct {
		Filename string
		Files    []struct{ Path string }
	}
	if err := json.Unmarshal(out, &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v\n%s", err, out)
	}
	var files []string
	for _, f := range packed[0].Files {
		files = append(files, f.Path)
	}
	slices.Sort(files)
	if want := []string{"README.md", "package.json", "tether.d.ts", "tether.js"}; !slices.Equal(files, want) {
		t.Errorf("the package holds %q, want %q", files, want)
	}

	app := filepath.Join(tmp, "app")
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "package.json"), []byte(`{"name":"app","private":true,"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"smoke.mjs", "typecheck.ts", "tsconfig.json"} {
		b, err := os.ReadFile(filepath.Join("pkgtest", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(app, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(app, npm, "install", "--offline", filepath.Join(tmp, packed[0].Filename))

	// TypeScript resolves the package by name through its exports.
	run(app, node, tsc, "-p", ".")

	// Node: a live tether (the demo's: an echo backend behind tether, JSON
	// pings to the client every 200 ms) and the package imported by name.
	d, err := demo.Start(ctx, demo.Options{ListenAddr: "127.0.0.1:0", PageAddr: "127.0.0.1:0"}, func(tn *demo.Tuning) {
		tn.Tether.Session.ClientHeartbeat.Interval = 200 * time.Millisecond
		tn.Tether.Session.ClientHeartbeat.Timeout = 10 * time.Second
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := d.Close(cctx); err != nil {
			t.Errorf("demo close: %v", err)
		}
	})
	args := []string{"smoke.mjs", "ws://" + d.TetherAddr().String() + "/"}
	if nodeMajor(t, ctx, node) < 22 {
		args = append([]string{"--experimental-websocket"}, args...) // Node 20, 21: WebSocket behind a flag
	}
	out = run(app, node, args...)
	var report struct {
		OK          bool
		Received    []string
		ServerPings int
		PongRTTs    []float64
		Closed      struct{ Code int }
	}
	if err := json.Unmarshal(out, &report); err != nil || !report.OK || report.Closed.Code != 1000 {
		t.Fatalf("smoke.mjs: %v\n%s", err, out)
	}
	t.Logf("through tether from Node: %d messages echoed in order, %d server pings answered, client ping RTTs %v ms, closed %d", len(report.Received), report.ServerPings, report.PongRTTs, report.Closed.Code)
}

func nodeMajor(t *testing.T, ctx context.Context, node string) int {
	t.Helper()
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		t.Fatalf("node --version: %q", out)
	}
	return n
}

package main

import (
	"bytes"
	dbuildinfo "debug/buildinfo"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/tether-proxy/tether/internal/buildinfo"
)

// README "Version": `tether version` prints one line from the binary's
// build information. A test binary carries no VCS stamp, so it reports the
// VERSION file's release with +devel.
func TestVersionCommand(t *testing.T) {
	t.Parallel()
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		t.Skipf("this test binary is stamped with %q", bi.Main.Version)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"version"}, nil, &out, &errOut); code != 0 || errOut.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	want := "tether v" + strings.TrimSpace(releaseVersion) + "+devel (" + runtime.Version() + ", revision unknown)\n"
	if out.String() != want {
		t.Errorf("tether version printed %q, want %q", out.String(), want)
	}
	out.Reset()
	if run([]string{"--help"}, nil, &out, &errOut); !strings.Contains(out.String(), "\n  tether version ") {
		t.Errorf("--help does not list tether version:\n%s", out.String())
	}
}

// README "Version", "Metrics and logs": the built binary's `tether
// version` and its tether_build_info gauge agree with the build
// information Go wrote into it (read back with debug/buildinfo, as `go
// version -m` does), and tether_sessions_max is TETHER_MAX_SESSIONS.
func TestCoreVersionAndBuildInfoMetric(t *testing.T) {
	t.Parallel()
	bi, err := dbuildinfo.ReadFile(coreBin)
	if err != nil {
		t.Fatal(err)
	}
	want := buildinfo.FromBuildInfo(bi, strings.TrimSpace(releaseVersion))
	t.Logf("build info of the binary: %s", want)
	if want.GoVersion != runtime.Version() {
		t.Errorf("binary built by %s, this test by %s", want.GoVersion, runtime.Version())
	}
	code, out, errOut := coreRun(t, coreEnv(), "version")
	if code != 0 || errOut != "" {
		t.Fatalf("tether version: exit %d, stderr %q", code, errOut)
	}
	if out != want.String()+"\n" {
		t.Errorf("tether version printed %q, want %q", out, want.String()+"\n")
	}

	mfs := liveMetrics(t, "TETHER_MAX_SESSIONS=1234")
	got := map[string]string{}
	if mf := mfs["tether_build_info"]; mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("tether_build_info: %v, want one series of value 1", mf)
	} else {
		for _, l := range mf.GetMetric()[0].GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
	}
	for k, v := range map[string]string{"version": want.Version, "go_version": want.GoVersion, "revision": want.Revision} {
		if got[k] != v {
			t.Errorf("tether_build_info{%s=%q}, want %q", k, got[k], v)
		}
	}
	if mf := mfs["tether_sessions_max"]; mf == nil || mf.GetMetric()[0].GetGauge().GetValue() != 1234 {
		t.Errorf("tether_sessions_max: %v, want 1234", mf)
	}
}

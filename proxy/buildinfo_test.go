package proxy_test

import (
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/tether-proxy/tether/internal/buildinfo"
	"github.com/tether-proxy/tether/proxy"
)

// README "Metrics and logs": tether_build_info is 1 with the build's
// labels, and tether_sessions_max is TETHER_MAX_SESSIONS (0 = unlimited),
// both on a live server's /metrics.
func TestBuildInfoAndSessionsMaxMetrics(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	for _, tc := range []struct {
		name        string
		build       buildinfo.Info
		want        buildinfo.Info
		maxSessions int
	}{
		{"given build, limited", buildinfo.Info{Version: "v1.2.3", GoVersion: "go1.99.1", Revision: "0123abc+dirty"}, buildinfo.Info{Version: "v1.2.3", GoVersion: "go1.99.1", Revision: "0123abc+dirty"}, 37},
		// A test binary has no VCS stamp: Go's "(devel)".
		{"zero build, unlimited", buildinfo.Info{}, buildinfo.Info{Version: "(devel)", GoVersion: runtime.Version(), Revision: "unknown"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tt := startTetherOpts(t, b.URL, proxy.Options{Build: tc.build}, func(c *proxy.Config) { c.MaxSessions = tc.maxSessions })
			admin := httptest.NewServer(tt.AdminHandler())
			defer admin.Close()
			samples, types := coreScrape(t, admin.URL)
			series := `tether_build_info{go_version="` + tc.want.GoVersion + `",revision="` + tc.want.Revision + `",version="` + tc.want.Version + `"}`
			if v, ok := samples[series]; !ok || v != 1 {
				t.Errorf("%s = %v (present %v), want 1", series, v, ok)
			}
			if v, ok := samples["tether_sessions_max"]; !ok || v != float64(tc.maxSessions) {
				t.Errorf("tether_sessions_max = %v (present %v), want %d", v, ok, tc.maxSessions)
			}
			for _, name := range []string{"tether_build_info", "tether_sessions_max"} {
				if types[name] != "gauge" {
					t.Errorf("%s: type %q, want gauge", name, types[name])
				}
			}
		})
	}
}

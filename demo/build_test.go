package demo

import (
	"context"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/buildinfo"
	"github.com/tether-proxy/tether/internal/testkit"
)

// The demo's tether labels tether_build_info with Options.Build (main
// passes the binary's, README "Version").
func TestDemoBuildInfo(t *testing.T) {
	t.Parallel()
	build := buildinfo.Info{Version: "v9.8.7+devel", GoVersion: "go1.99.0", Revision: "unknown"}
	d, err := Start(t.Context(), Options{ListenAddr: loopback, PageAddr: loopback, Build: build})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("demo close: %v", err)
		}
	}()
	if v := testkit.Metric(t, d.Registry, "tether_build_info", "version="+build.Version, "go_version="+build.GoVersion, "revision="+build.Revision); v != 1 {
		t.Errorf("tether_build_info{version=%q, ...} = %v, want 1", build.Version, v)
	}
}

package main

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// liveMetrics starts the tether binary (extra env appended) with an admin
// listener and returns what its /metrics serves, by metric family name.
func liveMetrics(t *testing.T, env ...string) map[string]*dto.MetricFamily {
	t.Helper()
	up, _ := coreBackend(t)
	admin := coreFreeAddr(t)
	coreStart(t, append([]string{"TETHER_UPSTREAM_URL=" + up, "TETHER_ADMIN_ADDR=" + admin}, env...)...)
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

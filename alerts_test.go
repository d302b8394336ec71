package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tether-proxy/tether/internal/testkit"
)

// The alerting rules (README "Dashboard and alerts").
const (
	alertsFile     = "deploy/prometheus/alerts.yaml"
	alertsTestFile = "deploy/prometheus/alerts_test.yaml"
)

type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type alertTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// The rules pass promtool's checks and its unit tests, every alert has a
// severity, a summary and a description, a test where it fires and one
// where it does not, and uses only metrics tether serves.
func TestPrometheusAlerts(t *testing.T) {
	t.Parallel()
	var rules alertRules
	readYAML(t, alertsFile, &rules)
	var tests alertTests
	readYAML(t, alertsTestFile, &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	exprs := map[string]string{}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" {
				t.Errorf("group %s: a rule that is not an alert: %q", g.Name, r.Expr)
				continue
			}
			exprs["alert "+r.Alert] = r.Expr
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: %s has a test where it fires: %v, where it does not: %v", r.Alert, alertsTestFile, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s: no rules", alertsFile)
	}
	checkMetricsServed(t, liveMetrics(t), exprs)

	promtool(t, filepath.Dir(alertsFile), "check", "rules", filepath.Base(alertsFile))
	promtool(t, filepath.Dir(alertsFile), "test", "rules", filepath.Base(alertsTestFile))
}

// promtool runs Prometheus's promtool in dir, failing the test if it
// fails; without promtool it calls testkit.Missing.
func promtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		testkit.Missing(t, "promtool not found on PATH; install it with `apt-get install -y prometheus` to check PromQL and the alerting rules")
	}
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool %v: %v\n%s", args, err, out)
	}
}

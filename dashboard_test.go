package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The Grafana dashboard (README "Dashboard and alerts").
const dashboardFile = "deploy/grafana/tether.json"

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID         int                `json:"id"`
	Type       string             `json:"type"`
	Title      string             `json:"title"`
	Datasource *grafanaDatasource `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string             `json:"refId"`
		Expr       string             `json:"expr"`
		Datasource *grafanaDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

type grafanaDashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string             `json:"name"`
			Type       string             `json:"type"`
			Query      json.RawMessage    `json:"query"`
			Datasource *grafanaDatasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

// dashboardDatasource is how every panel and query names its data
// source: the dashboard's own datasource variable, so the file works both
// imported by hand and provisioned from disk.
const dashboardDatasource = "${datasource}"

// The dashboard is well formed, every query uses the datasource, job and
// instance variables, every metric it queries is served by a live tether,
// and it shows every tether metric tether serves, the process metrics and
// the metrics of features still to come.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 39 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want both set and a schema of Grafana 10.4 or later (39)", d.UID, d.Title, d.SchemaVersion)
	}

	exprs := map[string]string{}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		var q struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // a plain string
		}
		switch v.Type {
		case "datasource":
			if q.Query != "prometheus" {
				t.Errorf("variable %s: datasource type %q, want prometheus", v.Name, q.Query)
			}
		case "query":
			if v.Datasource == nil || v.Datasource.UID != dashboardDatasource {
				t.Errorf("variable %s: datasource %+v, want uid %s", v.Name, v.Datasource, dashboardDatasource)
			}
			// label_values(<selector>, <label>): the selector is PromQL.
			inner, ok := strings.CutPrefix(q.Query, "label_values(")
			i := strings.LastIndexByte(inner, ',')
			if !ok || i < 0 {
				t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
				continue
			}
			exprs["variable "+v.Name] = inner[:i]
		}
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" {
		t.Errorf("templating variables %v: want datasource (datasource), job and instance (query)", vars)
	}

	ids := map[int]string{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			what := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("%s: id not unique (also %s)", what, prev)
			}
			ids[p.ID] = what
			if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v outside the 24 columns", what, g)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != dashboardDatasource || len(p.Targets) == 0 {
				t.Errorf("%s: datasource %+v and %d queries, want uid %s and queries", what, p.Datasource, len(p.Targets), dashboardDatasource)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != dashboardDatasource {
					t.Errorf("%s query %s: datasource %+v, want uid %s", what, tg.RefID, tg.Datasource, dashboardDatasource)
				}
				if !strings.Contains(tg.Expr, `job=~"$job"`) || !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("%s query %s: %q does not filter on $job and $instance", what, tg.RefID, tg.Expr)
				}
				exprs[what+" query "+tg.RefID] = tg.Expr
			}
		}
	}
	walk(d.Panels)

	mfs := liveMetrics(t)
	used := checkMetricsServed(t, mfs, exprs)
	want := append([]string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines"}, notYetImplementedMetrics...)
	for name := range mfs {
		if strings.HasPrefix(name, "tether_") {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	for _, name := range want {
		if !used[name] {
			t.Errorf("the dashboard does not show %s", name)
		}
	}

	// Prometheus's own parser checks every query, as recording rules with
	// Grafana's variables filled in.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	keys := slices.Sorted(maps.Keys(exprs))
	for i, what := range keys {
		expr := grafanaVars.ReplaceAllStringFunc(exprs[what], func(v string) string {
			if strings.HasPrefix(v, "$__") {
				return "5m" // $__rate_interval, $__interval
			}
			return ".+" // $job, $instance: in a regex matcher
		})
		q, _ := json.Marshal(expr) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d # %s\n        expr: %s\n", i, strings.ReplaceAll(what, "\n", " "), q)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard-queries.yaml"), []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "check", "rules", "dashboard-queries.yaml")
	if t.Failed() {
		t.Logf("the queries as rules:\n%s", rules.String())
	}
}

// grafanaVars matches Grafana's $name and ${name} (with a :format).
var grafanaVars = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*`)

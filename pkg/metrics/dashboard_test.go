package metrics_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dronelink/dronelink/pkg/metrics"
)

// dashboard is the part of a Grafana dashboard these tests read.
type dashboard struct {
	Templating struct {
		List []struct {
			Name, Query string
		}
	}
	Panels []struct {
		ID      int
		Title   string
		GridPos struct{ X, Y, W, H int }
		Field   struct {
			Defaults  struct{ Unit string }
			Overrides []struct {
				Matcher    struct{ ID, Options string }
				Properties []struct {
					ID    string
					Value any
				}
			}
		} `json:"fieldConfig"`
		Targets []struct {
			RefID        string `json:"refId"`
			Expr         string
			LegendFormat string `json:"legendFormat"`
		}
	}
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// daemonMetrics returns the metric families dronelinkd exports, as its /metrics has them:
// the link's, the tunnel's and (with --relay) the relay's, and the Go and process collectors.
func daemonMetrics(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if _, err := metrics.New(reg, metrics.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.NewTunnel(reg, metrics.RoleDrone); err != nil {
		t.Fatal(err)
	}
	relayHooks, err := metrics.NewRelay(reg, metrics.RoleDrone) // with --relay
	if err != nil {
		t.Fatal(err)
	}
	relayHooks.Connected("nats://relay:4222") // server_info has no series before
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]dto.MetricType{}
	for _, f := range families {
		names[f.GetName()] = f.GetType()
	}
	return names
}

var (
	metricName = regexp.MustCompile(`\b(?:dronelink|process|go)_[a-z_]+\b`)
	selector   = regexp.MustCompile(`\{[^}]*\}`)
	byClause   = regexp.MustCompile(`\bby \(([^)]*)\)`)
)

// TestDashboardTellsDronesApart checks every query of deploy/grafana-dashboard.json: it
// names metrics the daemon exports, keeps to the drones chosen in the $drone variable (the
// drone label of prometheus.yml's targets), keeps them apart in every aggregation and names
// each series' drone in its legend, and each panel's unit fits what it shows.
func TestDashboardTellsDronesApart(t *testing.T) {
	d := loadDashboard(t)
	exported := daemonMetrics(t)

	var droneVar string
	for _, v := range d.Templating.List {
		if v.Name == "drone" {
			droneVar = v.Query
		}
	}
	if !strings.HasSuffix(droneVar, ", drone)") || !strings.HasPrefix(droneVar, "label_values(") {
		t.Errorf("no template variable drone = label_values(..., drone): %q", droneVar)
	}
	prom, err := os.ReadFile("../../deploy/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s+labels:\n\s+drone: "[^"]+"`).Match(prom) {
		t.Error("deploy/prometheus.yml gives its target no drone label")
	}

	occupied := map[[2]int]string{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := occupied[[2]int{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap", other, p.Title)
				}
				occupied[[2]int{x, y}] = p.Title
			}
		}
		for _, q := range p.Targets {
			where := fmt.Sprintf("panel %q query %s", p.Title, q.RefID)
			for _, name := range metricName.FindAllString(q.Expr, -1) {
				family := name
				if _, ok := exported[family]; !ok {
					family = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				}
				if _, ok := exported[family]; !ok {
					t.Errorf("%s: dronelinkd exports no %s", where, name)
				}
			}
			sels := selector.FindAllString(q.Expr, -1)
			if len(sels) == 0 {
				t.Errorf("%s: no label selector: %s", where, q.Expr)
			}
			for _, s := range sels {
				if !strings.Contains(s, `drone=~"$drone"`) {
					t.Errorf("%s: selector %s does not keep to $drone", where, s)
				}
			}
			for _, by := range byClause.FindAllStringSubmatch(q.Expr, -1) {
				if !slices.Contains(strings.Split(strings.ReplaceAll(by[1], " ", ""), ","), "drone") {
					t.Errorf("%s: %q adds the drones up", where, by[0])
				}
			}
			if !strings.Contains(q.LegendFormat, "{{drone}}") {
				t.Errorf("%s: legend %q does not name the drone", where, q.LegendFormat)
			}
			unit := p.Field.Defaults.Unit
			for _, o := range p.Field.Overrides {
				if o.Matcher.ID == "byFrameRefID" && o.Matcher.Options == q.RefID {
					for _, prop := range o.Properties {
						if prop.ID == "unit" {
							unit = fmt.Sprint(prop.Value)
						}
					}
				}
			}
			if want := unitOf(q.Expr); unit != want {
				t.Errorf("%s: unit %q, want %q for %s", where, unit, want, q.Expr)
			}
		}
	}
	checkPromQL(t, d)
}

// unitOf is the Grafana unit for what expr computes: bytes for a byte gauge, bytes per
// second for a rate of bytes, seconds for a quantile of a seconds histogram, operations per
// second for a rate of operations, packets per second for a rate of packets, otherwise a
// plain number.
func unitOf(expr string) string {
	switch {
	case strings.Contains(expr, "_bytes_total"):
		return "Bps"
	case regexp.MustCompile(`_bytes\b`).MatchString(expr):
		return "bytes"
	case strings.HasPrefix(expr, "histogram_quantile(") && strings.Contains(expr, "_seconds_bucket"):
		return "s"
	case strings.Contains(expr, "rate(dronelink_handshake_operations_total"):
		return "ops"
	case strings.HasPrefix(expr, "sum by (drone, kind) (rate(dronelink_packets_"),
		strings.HasPrefix(expr, "sum by (drone, reason) (rate(dronelink_dropped_packets_total"):
		return "pps"
	}
	return "short"
}

// checkPromQL has promtool parse every query, with the dashboard's variables filled in,
// as a recording rule.
func checkPromQL(t *testing.T, d dashboard) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed on CI")
		}
		t.Log("promtool not installed: queries not parsed")
		return
	}
	fill := strings.NewReplacer("$__rate_interval", "1m", "$job", ".*", "$drone", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			expr, _ := json.Marshal(fill.Replace(q.Expr)) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: panel%d_%s\n        expr: %s\n", p.ID, q.RefID, expr)
		}
	}
	path := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}

// Package kubernetes holds tether's Kubernetes manifests and the test that
// validates them. It is a module of its own so that k8s.io/api stays out of
// tether's go.mod.
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Paths of the repository files the manifests must agree with, relative to
// this folder.
const (
	readmePath     = "../../README.md"
	dockerfilePath = "../../Dockerfile"
)

// drainMargin is what terminationGracePeriodSeconds must leave beyond the
// preStop sleep and TETHER_SHUTDOWN_TIMEOUT: tether spends up to 1 s more
// closing its admin listener after the drain deadline, and the rest covers
// process exit and the kubelet's own latency.
const drainMargin = 5 * time.Second

// idleSessionBytes is the measured memory of one idle session through a
// real tether process (README "Performance": 26 KB RSS per session). The
// per-pod session cap times this, plus the buffer cap, must fit GOMEMLIMIT.
const idleSessionBytes = 26 << 10

// manifests is everything in this folder, strictly decoded.
type manifests struct {
	deploy  *appsv1.Deployment
	svc     *corev1.Service
	pdb     *policyv1.PodDisruptionBudget
	hpa     *autoscalingv2.HorizontalPodAutoscaler
	ing     *networkingv1.Ingress
	kustRes []string
}

// repoFacts is what the manifests are checked against: the variables of
// the README's configuration table and the Dockerfile's ports, user and
// defaults.
type repoFacts struct {
	vars      map[string]bool   // TETHER_* variables of README "Configuration"
	defaults  map[string]string // their defaults, from the same table
	exposed   []int32           // Dockerfile EXPOSE
	dockerEnv map[string]string
	user      string // Dockerfile USER
}

func (m *manifests) deepCopy() *manifests {
	return &manifests{
		deploy:  m.deploy.DeepCopy(),
		svc:     m.svc.DeepCopy(),
		pdb:     m.pdb.DeepCopy(),
		hpa:     m.hpa.DeepCopy(),
		ing:     m.ing.DeepCopy(),
		kustRes: slices.Clone(m.kustRes),
	}
}

// decodeStrict decodes a one-document YAML file into obj, failing on
// unknown or duplicate fields, and checks its apiVersion and kind.
func decodeStrict(t *testing.T, file, apiVersion, kind string, obj any, tm func() metav1.TypeMeta) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("\n---")) {
		t.Fatalf("%s: want one YAML document", file)
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if got := tm(); got.APIVersion != apiVersion || got.Kind != kind {
		t.Fatalf("%s: apiVersion/kind %s/%s, want %s/%s", file, got.APIVersion, got.Kind, apiVersion, kind)
	}
}

// kustomization is the part of kustomize's Kustomization used here; any
// other field fails the strict decode, so adding one means extending this.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{
		deploy: &appsv1.Deployment{},
		svc:    &corev1.Service{},
		pdb:    &policyv1.PodDisruptionBudget{},
		hpa:    &autoscalingv2.HorizontalPodAutoscaler{},
		ing:    &networkingv1.Ingress{},
	}
	decodeStrict(t, "deployment.yaml", "apps/v1", "Deployment", m.deploy, func() metav1.TypeMeta { return m.deploy.TypeMeta })
	decodeStrict(t, "service.yaml", "v1", "Service", m.svc, func() metav1.TypeMeta { return m.svc.TypeMeta })
	decodeStrict(t, "pdb.yaml", "policy/v1", "PodDisruptionBudget", m.pdb, func() metav1.TypeMeta { return m.pdb.TypeMeta })
	decodeStrict(t, "hpa.yaml", "autoscaling/v2", "HorizontalPodAutoscaler", m.hpa, func() metav1.TypeMeta { return m.hpa.TypeMeta })
	decodeStrict(t, "ingress.yaml", "networking.k8s.io/v1", "Ingress", m.ing, func() metav1.TypeMeta { return m.ing.TypeMeta })
	var k kustomization
	decodeStrict(t, "kustomization.yaml", "kustomize.config.k8s.io/v1beta1", "Kustomization", &k,
		func() metav1.TypeMeta { return metav1.TypeMeta{APIVersion: k.APIVersion, Kind: k.Kind} })
	m.kustRes = k.Resources
	return m
}

// readmeVarRow matches a row of a markdown table; group 1 is its first cell.
var readmeVarRow = regexp.MustCompile(`^\|\s*([^|]+?)\s*\|`)
var tetherVar = regexp.MustCompile(`TETHER_[A-Z0-9_]+`)

func loadRepoFacts(t *testing.T) *repoFacts {
	t.Helper()
	f := &repoFacts{vars: map[string]bool{}, defaults: map[string]string{}, dockerEnv: map[string]string{}}

	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	inConfig := false
	sc := bufio.NewScanner(bytes.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			inConfig = strings.TrimSpace(line) == "## Configuration"
			continue
		}
		if !inConfig {
			continue
		}
		if m := readmeVarRow.FindStringSubmatch(line); m != nil {
			cells := strings.Split(line, "|")
			for _, v := range tetherVar.FindAllString(m[1], -1) {
				f.vars[v] = true
				if len(cells) > 2 {
					f.defaults[v] = strings.Trim(strings.TrimSpace(cells[2]), "`")
				}
			}
		}
	}
	if len(f.vars) < 10 || !f.vars["TETHER_UPSTREAM_URL"] || !f.vars["TETHER_SHUTDOWN_TIMEOUT"] {
		t.Fatalf("%s: found only %d variables in the Configuration table: %v", readmePath, len(f.vars), f.vars)
	}

	df, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	sc = bufio.NewScanner(bytes.NewReader(df))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "EXPOSE":
			for _, p := range fields[1:] {
				n, err := strconv.ParseInt(strings.TrimSuffix(p, "/tcp"), 10, 32)
				if err != nil {
					t.Fatalf("%s: EXPOSE %q: %v", dockerfilePath, p, err)
				}
				f.exposed = append(f.exposed, int32(n))
			}
		case "ENV":
			for _, kv := range fields[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("%s: ENV %q: want KEY=VALUE", dockerfilePath, kv)
				}
				f.dockerEnv[k] = v
			}
		case "USER":
			f.user = fields[1]
		}
	}
	if len(f.exposed) == 0 || f.user == "" {
		t.Fatalf("%s: no EXPOSE or USER line", dockerfilePath)
	}
	return f
}

// checker collects every violated invariant instead of stopping at the
// first, so one run shows them all.
type checker struct{ errs []error }

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// envValue returns the literal value of env var name in c.
func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, e.ValueFrom == nil
		}
	}
	return "", false
}

// addrPort returns the port of a listen address such as ":8080".
func addrPort(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(p, 10, 32)
	return int32(n), err
}

// resolvePort resolves a numeric or named container port of c.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) || (p.Type == intstr.String && cp.Name == p.StrVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// selects reports whether sel is a valid, non-empty selector matching lbls.
func selects(sel *metav1.LabelSelector, lbls map[string]string) error {
	if sel == nil {
		return errors.New("no selector")
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err
	}
	if s.Empty() {
		return errors.New("empty selector selects everything")
	}
	if !s.Matches(labels.Set(lbls)) {
		return fmt.Errorf("selector %s does not match pod labels %v", s, lbls)
	}
	return nil
}

// check returns every invariant m violates against the repository facts f.
func check(m *manifests, f *repoFacts) []error {
	c := &checker{}
	d := m.deploy
	pod := &d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels

	// kustomization.yaml lists exactly the manifests.
	wantRes := []string{"deployment.yaml", "hpa.yaml", "ingress.yaml", "pdb.yaml", "service.yaml"}
	gotRes := slices.Sorted(slices.Values(m.kustRes))
	if !slices.Equal(gotRes, wantRes) {
		c.errorf("kustomization resources %v, want %v", gotRes, wantRes)
	}

	// Selectors.
	if err := selects(d.Spec.Selector, podLabels); err != nil {
		c.errorf("deployment selector: %v", err)
	}
	if len(m.svc.Spec.Selector) == 0 {
		c.errorf("service has no selector")
	} else if !labels.SelectorFromSet(m.svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		c.errorf("service selector %v does not match pod labels %v", m.svc.Spec.Selector, podLabels)
	}
	if err := selects(m.pdb.Spec.Selector, podLabels); err != nil {
		c.errorf("pdb selector: %v", err)
	}
	for i, tsc := range pod.TopologySpreadConstraints {
		if err := selects(tsc.LabelSelector, podLabels); err != nil {
			c.errorf("topologySpreadConstraints[%d]: %v", i, err)
		}
	}
	if len(pod.TopologySpreadConstraints) == 0 && pod.Affinity == nil {
		c.errorf("no topology spread or anti-affinity: replicas may share a node")
	}

	// HPA targets the Deployment and owns the replica count.
	ref := m.hpa.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name {
		c.errorf("hpa targets %s %s/%s, want apps/v1 Deployment/%s", ref.APIVersion, ref.Kind, ref.Name, d.Name)
	}
	if d.Spec.Replicas != nil {
		c.errorf("deployment sets replicas: kubectl apply would reset the HPA's count")
	}
	if m.hpa.Spec.MinReplicas == nil || *m.hpa.Spec.MinReplicas < 2 {
		c.errorf("hpa minReplicas must be at least 2, so a drained pod's clients have another pod")
	} else if m.hpa.Spec.MaxReplicas < *m.hpa.Spec.MinReplicas {
		c.errorf("hpa maxReplicas %d < minReplicas %d", m.hpa.Spec.MaxReplicas, *m.hpa.Spec.MinReplicas)
	}
	hasCPU := false
	for _, mt := range m.hpa.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU {
			hasCPU = true
		}
	}
	if !hasCPU {
		c.errorf("hpa has no cpu metric")
	}

	// PDB allows exactly one voluntary disruption at a time.
	pdb := m.pdb.Spec
	switch {
	case pdb.MaxUnavailable != nil && pdb.MinAvailable != nil:
		c.errorf("pdb sets both minAvailable and maxUnavailable")
	case pdb.MaxUnavailable != nil:
		if *pdb.MaxUnavailable != intstr.FromInt32(1) {
			c.errorf("pdb maxUnavailable %s, want 1", pdb.MaxUnavailable.String())
		}
	case pdb.MinAvailable == nil:
		c.errorf("pdb sets neither minAvailable nor maxUnavailable")
	}

	// Rolling updates add a pod before draining one.
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" {
		c.errorf("rolling update must set maxUnavailable 0")
	}

	if len(pod.Containers) != 1 {
		c.errorf("want one container, have %d", len(pod.Containers))
		return c.errs
	}
	ctr := &pod.Containers[0]

	// Every TETHER_* variable is one README "Configuration" defines, and
	// the required one is set to a ws:// or wss:// URL.
	for _, e := range ctr.Env {
		if strings.HasPrefix(e.Name, "TETHER_") && !f.vars[e.Name] {
			c.errorf("env %s is not a tether variable (README Configuration)", e.Name)
		}
	}
	if u, ok := envValue(ctr, "TETHER_UPSTREAM_URL"); !ok {
		c.errorf("TETHER_UPSTREAM_URL (required) is not set")
	} else {
		for _, s := range strings.Split(u, ",") {
			pu, err := url.Parse(strings.TrimSpace(s))
			if err != nil || (pu.Scheme != "ws" && pu.Scheme != "wss") || pu.Host == "" {
				c.errorf("TETHER_UPSTREAM_URL %q: want ws:// or wss:// URLs", s)
			}
		}
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		c.errorf("enableServiceLinks must be false: a Service named tether injects TETHER_SERVICE_HOST, TETHER_PORT, ...")
	}

	// Ports: the container ports are the Dockerfile's EXPOSE ports, and
	// the listen and admin addresses (the manifest's, or else the image's
	// ENV) use them.
	var ctrPorts []int32
	for _, p := range ctr.Ports {
		ctrPorts = append(ctrPorts, p.ContainerPort)
	}
	if !slices.Equal(slices.Sorted(slices.Values(ctrPorts)), slices.Sorted(slices.Values(f.exposed))) {
		c.errorf("container ports %v, Dockerfile EXPOSE %v", ctrPorts, f.exposed)
	}
	addrOf := func(name string) int32 {
		v, ok := envValue(ctr, name)
		if !ok {
			v = f.dockerEnv[name]
		}
		p, err := addrPort(v)
		if err != nil {
			c.errorf("%s %q: %v", name, v, err)
		}
		return p
	}
	listenPort, adminPort := addrOf("TETHER_LISTEN_ADDR"), addrOf("TETHER_ADMIN_ADDR")
	for _, name := range []string{"TETHER_LISTEN_ADDR", "TETHER_ADMIN_ADDR"} {
		if v, ok := envValue(ctr, name); ok && f.dockerEnv[name] != "" && v != f.dockerEnv[name] {
			c.errorf("%s %q differs from the Dockerfile's %q", name, v, f.dockerEnv[name])
		}
	}
	if !slices.Contains(ctrPorts, listenPort) || !slices.Contains(ctrPorts, adminPort) {
		c.errorf("listen port %d / admin port %d are not container ports %v", listenPort, adminPort, ctrPorts)
	}

	// Probes on the admin port.
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			c.errorf("%s: want an httpGet probe on %s", what, path)
			return
		}
		if p.HTTPGet.Path != path {
			c.errorf("%s path %q, want %q", what, p.HTTPGet.Path, path)
		}
		if port, ok := resolvePort(ctr, p.HTTPGet.Port); !ok || port != adminPort {
			c.errorf("%s port %s is not the admin port %d", what, p.HTTPGet.Port.String(), adminPort)
		}
	}
	probe("readinessProbe", ctr.ReadinessProbe, "/readyz")
	probe("livenessProbe", ctr.LivenessProbe, "/healthz")

	// Prometheus scrape annotations point at the admin port's /metrics.
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" ||
		ann["prometheus.io/port"] != strconv.Itoa(int(adminPort)) {
		c.errorf("prometheus.io annotations %v: want scrape true, /metrics on port %d", ann, adminPort)
	}

	// Service: ClusterIP on 80 to the listen port, no affinity.
	if m.svc.Spec.Type != corev1.ServiceTypeClusterIP {
		c.errorf("service type %q, want ClusterIP", m.svc.Spec.Type)
	}
	if a := m.svc.Spec.SessionAffinity; a != "" && a != corev1.ServiceAffinityNone {
		c.errorf("service sessionAffinity %q: tether has no shared state, use None", a)
	}
	if len(m.svc.Spec.Ports) != 1 {
		c.errorf("service ports %d, want 1 (the admin port stays private)", len(m.svc.Spec.Ports))
	} else {
		sp := m.svc.Spec.Ports[0]
		if port, ok := resolvePort(ctr, sp.TargetPort); sp.Port != 80 || !ok || port != listenPort {
			c.errorf("service port %d -> %s, want 80 -> the listen port %d", sp.Port, sp.TargetPort.String(), listenPort)
		}
	}

	// Drain: the grace period covers the preStop sleep and the whole
	// TETHER_SHUTDOWN_TIMEOUT, and the spread fits in the timeout.
	timeout := envDuration(c, ctr, "TETHER_SHUTDOWN_TIMEOUT")
	if spread := envDuration(c, ctr, "TETHER_SHUTDOWN_SPREAD"); spread > timeout/2 {
		c.errorf("TETHER_SHUTDOWN_SPREAD %v is over half of TETHER_SHUTDOWN_TIMEOUT %v (tether clamps it)", spread, timeout)
	}
	var preStop time.Duration
	if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil {
		switch h := ctr.Lifecycle.PreStop; {
		case h.Sleep != nil:
			preStop = time.Duration(h.Sleep.Seconds) * time.Second
		default:
			c.errorf("preStop must be a sleep action: the distroless image has no shell")
		}
	}
	if pod.TerminationGracePeriodSeconds == nil {
		c.errorf("terminationGracePeriodSeconds unset (default 30 s)")
	} else if grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; grace < preStop+timeout+drainMargin {
		c.errorf("terminationGracePeriodSeconds %v < preStop %v + TETHER_SHUTDOWN_TIMEOUT %v + %v: SIGKILL would cut drains short",
			grace, preStop, timeout, drainMargin)
	}

	// Security: the image's non-root user, nothing writable, no privileges.
	psc, sc := pod.SecurityContext, ctr.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		c.errorf("pod securityContext must set runAsNonRoot")
	}
	if uid, err := dockerUID(f.user); err != nil {
		c.errorf("Dockerfile USER: %v", err)
	} else if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != uid {
		c.errorf("runAsUser must be %d, the Dockerfile's USER %s", uid, f.user)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.errorf("container must set readOnlyRootFilesystem")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.errorf("container must set allowPrivilegeEscalation false")
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		c.errorf("container must drop ALL capabilities and add none")
	}

	// Resources, and memory sizing: the session cap and buffer cap fit
	// GOMEMLIMIT, which stays under the memory limit.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := ctr.Resources.Requests[r]; !ok {
			c.errorf("no %s request (the HPA's utilisation is relative to it)", r)
		}
	}
	memLimit, ok := ctr.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		c.errorf("no memory limit")
	}
	if v, ok := envValue(ctr, "GOMEMLIMIT"); ok {
		gml, err := parseGoMemLimit(v)
		if err != nil {
			c.errorf("GOMEMLIMIT %q: %v", v, err)
		} else if !memLimit.IsZero() && gml >= memLimit.Value() {
			c.errorf("GOMEMLIMIT %d >= memory limit %s", gml, memLimit.String())
		} else if sess, buf := envInt(c, ctr, "TETHER_MAX_SESSIONS"), envInt(c, ctr, "TETHER_BUFFER_TOTAL_MAX_BYTES"); sess == 0 || sess*idleSessionBytes+buf > gml {
			c.errorf("TETHER_MAX_SESSIONS %d × %d B + TETHER_BUFFER_TOTAL_MAX_BYTES %d does not fit GOMEMLIMIT %d",
				sess, idleSessionBytes, buf, gml)
		}
	}
	checkIngress(c, m, f)
	return c.errs
}

// ingressAffinity is what ingress.yaml must say for a session resume to
// reach its owner (README "Running many replicas").
var ingressAffinity = map[string]string{
	"nginx.ingress.kubernetes.io/affinity":      "cookie",
	"nginx.ingress.kubernetes.io/affinity-mode": "persistent",
}

// checkIngress: ingress.yaml routes to the Service's port, with cookie
// affinity whose cookie outlives the resume window, and WebSocket
// timeouts longer than the client heartbeat interval.
func checkIngress(c *checker, m *manifests, f *repoFacts) {
	ing := m.ing
	svcPorts := map[string]int32{}
	for _, p := range m.svc.Spec.Ports {
		svcPorts[p.Name] = p.Port
	}
	paths := 0
	for _, r := range ing.Spec.Rules {
		if r.HTTP == nil {
			c.errorf("ingress rule %q has no http paths", r.Host)
			continue
		}
		for _, p := range r.HTTP.Paths {
			paths++
			s := p.Backend.Service
			if s == nil {
				c.errorf("ingress path %q has no service backend", p.Path)
				continue
			}
			if s.Name != m.svc.Name {
				c.errorf("ingress backend service %q, the Service is %q", s.Name, m.svc.Name)
			}
			if s.Port.Name != "" {
				if _, ok := svcPorts[s.Port.Name]; !ok {
					c.errorf("ingress backend port %q is not a Service port %v", s.Port.Name, svcPorts)
				}
			} else if !slices.Contains(slices.Collect(maps.Values(svcPorts)), s.Port.Number) {
				c.errorf("ingress backend port %d is not a Service port %v", s.Port.Number, svcPorts)
			}
		}
	}
	if paths == 0 || ing.Spec.DefaultBackend != nil {
		c.errorf("ingress: want rules with paths and no default backend")
	}
	a := ing.Annotations
	for k, v := range ingressAffinity {
		if a[k] != v {
			c.errorf("ingress annotation %s is %q, want %q", k, a[k], v)
		}
	}
	if a["nginx.ingress.kubernetes.io/session-cookie-name"] == "" {
		c.errorf("ingress annotation nginx.ingress.kubernetes.io/session-cookie-name is not set")
	}
	seconds := func(name string) time.Duration {
		v, ok := a["nginx.ingress.kubernetes.io/"+name]
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || n <= 0 {
			c.errorf("ingress annotation nginx.ingress.kubernetes.io/%s %q: want a number of seconds", name, v)
		}
		return time.Duration(n) * time.Second
	}
	ctr := &m.deploy.Spec.Template.Spec.Containers[0]
	setting := func(name string) time.Duration {
		v, ok := envValue(ctr, name)
		if !ok {
			v = f.defaults[name]
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			c.errorf("%s %q (the Deployment's, or README's default): %v", name, v, err)
		}
		return d
	}
	if maxAge, window := seconds("session-cookie-max-age"), setting("TETHER_RESUME_WINDOW"); maxAge < window {
		c.errorf("ingress session-cookie-max-age %v is shorter than TETHER_RESUME_WINDOW %v", maxAge, window)
	}
	hb := setting("TETHER_CLIENT_HEARTBEAT_INTERVAL")
	for _, name := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
		if d := seconds(name); d <= hb {
			c.errorf("ingress %s %v is not longer than TETHER_CLIENT_HEARTBEAT_INTERVAL %v", name, d, hb)
		}
	}
}

// dockerUID returns the numeric uid of a Dockerfile USER value: a number,
// or distroless's "nonroot" (65532), optionally followed by ":group".
func dockerUID(user string) (int64, error) {
	u, _, _ := strings.Cut(user, ":")
	if u == "nonroot" {
		return 65532, nil
	}
	uid, err := strconv.ParseInt(u, 10, 64)
	if err != nil || uid == 0 {
		return 0, fmt.Errorf("%q is not a known non-root user", user)
	}
	return uid, nil
}

func envDuration(c *checker, ctr *corev1.Container, name string) time.Duration {
	v, ok := envValue(ctr, name)
	if !ok {
		c.errorf("%s must be set explicitly in the manifest", name)
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		c.errorf("%s: %v", name, err)
	}
	return d
}

func envInt(c *checker, ctr *corev1.Container, name string) int64 {
	v, ok := envValue(ctr, name)
	if !ok {
		c.errorf("%s must be set explicitly in the manifest", name)
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		c.errorf("%s: %v", name, err)
	}
	return n
}

// parseGoMemLimit parses GOMEMLIMIT's syntax (runtime/debug: a number of
// bytes with an optional B, KiB, MiB, GiB or TiB suffix).
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a positive number of bytes with an optional B/KiB/MiB/GiB/TiB suffix")
	}
	return n * mult, nil
}

// TestManifests decodes every manifest strictly into its k8s.io/api type
// and checks the invariants above against README.md and the Dockerfile.
func TestManifests(t *testing.T) {
	m, f := loadManifests(t), loadRepoFacts(t)
	for _, err := range check(m, f) {
		t.Error(err)
	}
}

// TestDecodeIsStrict: a misspelt or misplaced field fails the decode
// rather than being dropped silently.
func TestDecodeIsStrict(t *testing.T) {
	data, err := os.ReadFile("deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(string) string{
		"misspelt field": func(s string) string {
			return strings.Replace(s, "terminationGracePeriodSeconds:", "terminationGracePeriod:", 1)
		},
		"duplicate field": func(s string) string {
			return strings.Replace(s, "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  revisionHistoryLimit: 6\n", 1)
		},
		"wrong type": func(s string) string {
			return strings.Replace(s, "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 40s", 1)
		},
	} {
		broken := edit(string(data))
		if broken == string(data) {
			t.Fatalf("%s: edit did not apply", name)
		}
		if err := yaml.UnmarshalStrict([]byte(broken), &appsv1.Deployment{}); err == nil {
			t.Errorf("%s: strict decode accepted it", name)
		}
	}
}

// TestChecksCatchBrokenManifests breaks each invariant in turn on a copy
// of the real manifests and requires check to report it, so no check is
// vacuous.
func TestChecksCatchBrokenManifests(t *testing.T) {
	good, f := loadManifests(t), loadRepoFacts(t)
	if errs := check(good, f); len(errs) > 0 {
		t.Fatalf("the real manifests fail: %v", errs)
	}
	ctr := func(m *manifests) *corev1.Container { return &m.deploy.Spec.Template.Spec.Containers[0] }
	setEnv := func(m *manifests, name, value string) {
		c := ctr(m)
		for i := range c.Env {
			if c.Env[i].Name == name {
				c.Env[i].Value = value
				return
			}
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
	}
	delEnv := func(m *manifests, name string) {
		c := ctr(m)
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
	}
	grace := func(m *manifests) int64 { return *m.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds }
	pt := func(v bool) *bool { return &v }
	cases := map[string]func(m *manifests){
		"kustomization misses a file": func(m *manifests) { m.kustRes = m.kustRes[1:] },
		"deployment selector mismatch": func(m *manifests) {
			m.deploy.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other"
		},
		"service selector mismatch": func(m *manifests) { m.svc.Spec.Selector["app.kubernetes.io/name"] = "other" },
		"service selector empty":    func(m *manifests) { m.svc.Spec.Selector = nil },
		"pdb selector mismatch": func(m *manifests) {
			m.pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other"
		},
		"pdb selector empty": func(m *manifests) { m.pdb.Spec.Selector = &metav1.LabelSelector{} },
		"spread selector mismatch": func(m *manifests) {
			m.deploy.Spec.Template.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels["app.kubernetes.io/name"] = "x"
		},
		"no spread":                 func(m *manifests) { m.deploy.Spec.Template.Spec.TopologySpreadConstraints = nil },
		"hpa targets another name":  func(m *manifests) { m.hpa.Spec.ScaleTargetRef.Name = "tether-old" },
		"hpa targets a StatefulSet": func(m *manifests) { m.hpa.Spec.ScaleTargetRef.Kind = "StatefulSet" },
		"hpa min 1":                 func(m *manifests) { one := int32(1); m.hpa.Spec.MinReplicas = &one },
		"hpa without cpu":           func(m *manifests) { m.hpa.Spec.Metrics = nil },
		"deployment sets replicas":  func(m *manifests) { three := int32(3); m.deploy.Spec.Replicas = &three },
		"pdb maxUnavailable 2":      func(m *manifests) { two := intstr.FromInt32(2); m.pdb.Spec.MaxUnavailable = &two },
		"pdb unset": func(m *manifests) {
			m.pdb.Spec.MaxUnavailable, m.pdb.Spec.MinAvailable = nil, nil
		},
		"rolling update maxUnavailable 1": func(m *manifests) {
			one := intstr.FromInt32(1)
			m.deploy.Spec.Strategy.RollingUpdate.MaxUnavailable = &one
		},
		"unknown TETHER_ variable":   func(m *manifests) { setEnv(m, "TETHER_SHUTDOWN_GRACE", "10s") },
		"upstream URL missing":       func(m *manifests) { delEnv(m, "TETHER_UPSTREAM_URL") },
		"upstream URL http":          func(m *manifests) { setEnv(m, "TETHER_UPSTREAM_URL", "http://backend:9000/") },
		"service links on":           func(m *manifests) { m.deploy.Spec.Template.Spec.EnableServiceLinks = pt(true) },
		"container port not exposed": func(m *manifests) { ctr(m).Ports[0].ContainerPort = 8000 },
		"listen addr off the ports":  func(m *manifests) { setEnv(m, "TETHER_LISTEN_ADDR", ":8000") },
		"admin addr off the ports":   func(m *manifests) { setEnv(m, "TETHER_ADMIN_ADDR", ":8000") },
		"readiness path":             func(m *manifests) { ctr(m).ReadinessProbe.HTTPGet.Path = "/healthz" },
		"readiness on the listen port": func(m *manifests) {
			ctr(m).ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		},
		"liveness path": func(m *manifests) { ctr(m).LivenessProbe.HTTPGet.Path = "/readyz" },
		"liveness on an unknown port": func(m *manifests) {
			ctr(m).LivenessProbe.HTTPGet.Port = intstr.FromInt32(9091)
		},
		"no liveness probe": func(m *manifests) { ctr(m).LivenessProbe = nil },
		"metrics port annotation": func(m *manifests) {
			m.deploy.Spec.Template.Annotations["prometheus.io/port"] = "8080"
		},
		"service NodePort":  func(m *manifests) { m.svc.Spec.Type = corev1.ServiceTypeNodePort },
		"service affinity":  func(m *manifests) { m.svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP },
		"service port 8080": func(m *manifests) { m.svc.Spec.Ports[0].Port = 8080 },
		"service to admin": func(m *manifests) {
			m.svc.Spec.Ports[0].TargetPort = intstr.FromString("admin")
		},
		"service exposes admin": func(m *manifests) {
			m.svc.Spec.Ports = append(m.svc.Spec.Ports, corev1.ServicePort{Name: "admin", Port: 9090, TargetPort: intstr.FromString("admin")})
		},
		"grace without margin": func(m *manifests) {
			// preStop + TETHER_SHUTDOWN_TIMEOUT exactly: no time left to exit.
			v, _ := envValue(ctr(m), "TETHER_SHUTDOWN_TIMEOUT")
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatal(err)
			}
			g := ctr(m).Lifecycle.PreStop.Sleep.Seconds + int64(d/time.Second)
			m.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		},
		"shutdown timeout raised": func(m *manifests) {
			setEnv(m, "TETHER_SHUTDOWN_TIMEOUT", fmt.Sprintf("%ds", grace(m)))
		},
		"preStop lengthened": func(m *manifests) { ctr(m).Lifecycle.PreStop.Sleep.Seconds = grace(m) },
		"preStop exec": func(m *manifests) {
			ctr(m).Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "5"}}}
		},
		"grace unset":              func(m *manifests) { m.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds = nil },
		"shutdown timeout unset":   func(m *manifests) { delEnv(m, "TETHER_SHUTDOWN_TIMEOUT") },
		"shutdown timeout invalid": func(m *manifests) { setEnv(m, "TETHER_SHUTDOWN_TIMEOUT", "25") },
		"spread over half":         func(m *manifests) { setEnv(m, "TETHER_SHUTDOWN_SPREAD", "20s") },
		"runAsNonRoot off":         func(m *manifests) { m.deploy.Spec.Template.Spec.SecurityContext.RunAsNonRoot = pt(false) },
		"runAsUser root": func(m *manifests) {
			zero := int64(0)
			m.deploy.Spec.Template.Spec.SecurityContext.RunAsUser = &zero
		},
		"writable root":        func(m *manifests) { ctr(m).SecurityContext.ReadOnlyRootFilesystem = pt(false) },
		"privilege escalation": func(m *manifests) { ctr(m).SecurityContext.AllowPrivilegeEscalation = nil },
		"capabilities kept":    func(m *manifests) { ctr(m).SecurityContext.Capabilities.Drop = nil },
		"capability added": func(m *manifests) {
			ctr(m).SecurityContext.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
		},
		"no cpu request": func(m *manifests) { delete(ctr(m).Resources.Requests, corev1.ResourceCPU) },
		"GOMEMLIMIT over the limit": func(m *manifests) {
			ctr(m).Resources.Limits[corev1.ResourceMemory] = resource.MustParse("512Mi")
		},
		"sessions overflow GOMEMLIMIT": func(m *manifests) { setEnv(m, "TETHER_MAX_SESSIONS", "100000") },
		"sessions unlimited":           func(m *manifests) { setEnv(m, "TETHER_MAX_SESSIONS", "0") },
		"ingress to another service": func(m *manifests) {
			m.ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = "tether-old"
		},
		"ingress to another port name": func(m *manifests) {
			m.ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Name = "admin"
		},
		"ingress to another port number": func(m *manifests) {
			m.ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port = networkingv1.ServiceBackendPort{Number: 8080}
		},
		"ingress without affinity":                       func(m *manifests) { delete(m.ing.Annotations, "nginx.ingress.kubernetes.io/affinity") },
		"ingress balanced affinity":                      func(m *manifests) { m.ing.Annotations["nginx.ingress.kubernetes.io/affinity-mode"] = "balanced" },
		"ingress without cookie name":                    func(m *manifests) { delete(m.ing.Annotations, "nginx.ingress.kubernetes.io/session-cookie-name") },
		"ingress without cookie max-age":                 func(m *manifests) { delete(m.ing.Annotations, "nginx.ingress.kubernetes.io/session-cookie-max-age") },
		"ingress cookie shorter than the default window": func(m *manifests) { m.ing.Annotations["nginx.ingress.kubernetes.io/session-cookie-max-age"] = "60" },
		"ingress cookie shorter than the window":         func(m *manifests) { setEnv(m, "TETHER_RESUME_WINDOW", "48h") },
		"ingress read timeout under the heartbeat":       func(m *manifests) { m.ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] = "10" },
		"ingress without send timeout":                   func(m *manifests) { delete(m.ing.Annotations, "nginx.ingress.kubernetes.io/proxy-send-timeout") },
		"ingress heartbeat over the timeout":             func(m *manifests) { setEnv(m, "TETHER_CLIENT_HEARTBEAT_INTERVAL", "2h") },
		"no memory limit":                                func(m *manifests) { delete(ctr(m).Resources.Limits, corev1.ResourceMemory) },
	}
	// want is a part of the error each broken manifest must produce.
	want := map[string]string{
		"kustomization misses a file":                    "kustomization resources",
		"deployment selector mismatch":                   "deployment selector",
		"service selector mismatch":                      "service selector",
		"service selector empty":                         "service has no selector",
		"pdb selector mismatch":                          "pdb selector",
		"pdb selector empty":                             "empty selector",
		"spread selector mismatch":                       "topologySpreadConstraints[0]",
		"no spread":                                      "no topology spread",
		"hpa targets another name":                       "hpa targets",
		"hpa targets a StatefulSet":                      "hpa targets",
		"hpa min 1":                                      "minReplicas",
		"hpa without cpu":                                "no cpu metric",
		"deployment sets replicas":                       "sets replicas",
		"pdb maxUnavailable 2":                           "maxUnavailable 2",
		"pdb unset":                                      "neither",
		"rolling update maxUnavailable 1":                "rolling update",
		"unknown TETHER_ variable":                       "not a tether variable",
		"upstream URL missing":                           "(required) is not set",
		"upstream URL http":                              "want ws://",
		"service links on":                               "enableServiceLinks",
		"container port not exposed":                     "Dockerfile EXPOSE",
		"listen addr off the ports":                      "TETHER_LISTEN_ADDR",
		"admin addr off the ports":                       "TETHER_ADMIN_ADDR",
		"readiness path":                                 "readinessProbe path",
		"readiness on the listen port":                   "readinessProbe port",
		"liveness path":                                  "livenessProbe path",
		"liveness on an unknown port":                    "livenessProbe port",
		"no liveness probe":                              "livenessProbe: want",
		"metrics port annotation":                        "prometheus.io",
		"service NodePort":                               "want ClusterIP",
		"service affinity":                               "sessionAffinity",
		"service port 8080":                              "service port 8080",
		"service to admin":                               "-> admin",
		"service exposes admin":                          "service ports 2",
		"grace without margin":                           "SIGKILL",
		"shutdown timeout raised":                        "SIGKILL",
		"preStop lengthened":                             "SIGKILL",
		"preStop exec":                                   "preStop must be",
		"grace unset":                                    "terminationGracePeriodSeconds unset",
		"shutdown timeout unset":                         "TETHER_SHUTDOWN_TIMEOUT must be set",
		"shutdown timeout invalid":                       "missing unit",
		"spread over half":                               "TETHER_SHUTDOWN_SPREAD",
		"runAsNonRoot off":                               "runAsNonRoot",
		"runAsUser root":                                 "runAsUser",
		"writable root":                                  "readOnlyRootFilesystem",
		"privilege escalation":                           "allowPrivilegeEscalation",
		"capabilities kept":                              "drop ALL",
		"capability added":                               "drop ALL",
		"no cpu request":                                 "no cpu request",
		"no memory limit":                                "no memory limit",
		"GOMEMLIMIT over the limit":                      ">= memory limit",
		"sessions overflow GOMEMLIMIT":                   "does not fit GOMEMLIMIT",
		"sessions unlimited":                             "does not fit GOMEMLIMIT",
		"ingress to another service":                     "ingress backend service",
		"ingress to another port name":                   "is not a Service port",
		"ingress to another port number":                 "is not a Service port",
		"ingress without affinity":                       "nginx.ingress.kubernetes.io/affinity is",
		"ingress balanced affinity":                      "affinity-mode",
		"ingress without cookie name":                    "session-cookie-name is not set",
		"ingress without cookie max-age":                 "session-cookie-max-age \"\"",
		"ingress cookie shorter than the default window": "shorter than TETHER_RESUME_WINDOW 2m0s",
		"ingress cookie shorter than the window":         "shorter than TETHER_RESUME_WINDOW 48h0m0s",
		"ingress read timeout under the heartbeat":       "proxy-read-timeout 10s is not longer",
		"ingress without send timeout":                   "proxy-send-timeout \"\"",
		"ingress heartbeat over the timeout":             "TETHER_CLIENT_HEARTBEAT_INTERVAL 2h0m0s",
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatal("no expected error for this case")
			}
			m := good.deepCopy()
			breakIt(m)
			errs := check(m, f)
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), w) }) {
				t.Errorf("want an error containing %q, got %v", w, errs)
			}
		})
	}
}

// TestRepoFactsCatchDrift: the manifests are checked against the README
// table and the Dockerfile as they are, so changing those (a variable
// renamed, a port moved) fails the check too.
func TestRepoFactsCatchDrift(t *testing.T) {
	m, good := loadManifests(t), loadRepoFacts(t)
	for name, tc := range map[string]struct {
		edit func(f *repoFacts)
		want string
	}{
		"variable renamed in README": {func(f *repoFacts) { delete(f.vars, "TETHER_SHUTDOWN_SPREAD") }, "TETHER_SHUTDOWN_SPREAD is not a tether variable"},
		"port moved in Dockerfile":   {func(f *repoFacts) { f.exposed = []int32{8080, 9100} }, "Dockerfile EXPOSE"},
		"admin addr moved in Dockerfile": {func(f *repoFacts) {
			f.dockerEnv["TETHER_ADMIN_ADDR"] = ":9100"
		}, "TETHER_ADMIN_ADDR"},
		"user changed in Dockerfile": {func(f *repoFacts) { f.user = "1000:1000" }, "runAsUser must be 1000"},
		"root user in Dockerfile":    {func(f *repoFacts) { f.user = "root" }, "Dockerfile USER"},
		"resume window default raised in README": {func(f *repoFacts) {
			f.defaults["TETHER_RESUME_WINDOW"] = "48h"
		}, "shorter than TETHER_RESUME_WINDOW 48h0m0s"},
	} {
		f := &repoFacts{vars: map[string]bool{}, defaults: maps.Clone(good.defaults), dockerEnv: map[string]string{}, exposed: slices.Clone(good.exposed), user: good.user}
		for k, v := range good.vars {
			f.vars[k] = v
		}
		for k, v := range good.dockerEnv {
			f.dockerEnv[k] = v
		}
		tc.edit(f)
		errs := check(m, f)
		if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
			t.Errorf("%s: want an error containing %q, got %v", name, tc.want, errs)
		}
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// client is used for every request the demo makes; nothing it asks should
// take longer.
var client = &http.Client{Timeout: 5 * time.Second}

// getJSON decodes the JSON body of GET url into v.
func getJSON(url string, v any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decoding: %w", url, err)
	}
	return nil
}

// endpoint is one endpoint in a sidecar's /clusters.
type endpoint struct {
	Address    string  `json:"address"`
	Requests   int     `json:"requests"`
	EWMAMillis float64 `json:"ewmaMillis"`
	Health     string  `json:"health"`
	Resilience *struct {
		Breaker             string `json:"breaker"`
		Failures            int    `json:"failures"`
		ConsecutiveFailures int    `json:"consecutiveFailures"`
		Ejected             bool   `json:"ejected"`
	} `json:"resilience"`
}

// breaker is the endpoint's circuit-breaker state; "closed" before any
// request reached it.
func (e endpoint) breaker() string {
	if e.Resilience == nil || e.Resilience.Breaker == "" {
		return "closed"
	}
	return e.Resilience.Breaker
}

type clusterInfo struct {
	Name         string     `json:"name"`
	LoadBalancer string     `json:"loadBalancer"`
	Endpoints    []endpoint `json:"endpoints"`
}

// clusters reads a sidecar's GET /clusters.
func clusters(admin string) ([]clusterInfo, error) {
	var v struct {
		Clusters []clusterInfo `json:"clusters"`
	}
	err := getJSON("http://"+admin+"/clusters", &v)
	return v.Clusters, err
}

// endpointsOf returns the endpoints a sidecar has for service.
func endpointsOf(admin, service string) ([]endpoint, error) {
	cs, err := clusters(admin)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.Name == service {
			return c.Endpoints, nil
		}
	}
	return nil, nil
}

// waitEndpoints polls a sidecar's /clusters until service has want endpoints.
func waitEndpoints(ctx context.Context, admin, service string, want int) error {
	n := -1
	return poll(ctx, 20*time.Second, 50*time.Millisecond, func() (bool, error) {
		eps, err := endpointsOf(admin, service)
		n = len(eps)
		return err == nil && n == want, nil
	}, func() string {
		return fmt.Sprintf("%s/clusters: %s had %d endpoints, want %d", admin, service, n, want)
	})
}

type member struct {
	Node    string `json:"node"`
	Service string `json:"service"`
	Address string `json:"address"`
	State   string `json:"state"`
	Ready   bool   `json:"ready"`
}

// members reads a sidecar's gossip view, GET /members.
func members(admin string) ([]member, error) {
	var v struct {
		Members []member `json:"members"`
	}
	err := getJSON("http://"+admin+"/members", &v)
	return v.Members, err
}

func printMembers(admin string) error {
	ms, err := members(admin)
	if err != nil {
		return err
	}
	fmt.Printf("   %-19s %-17s %-21s %-7s %s\n", "node", "service", "inbound", "state", "ready")
	for _, m := range ms {
		svc, addr := m.Service, m.Address
		if svc == "" {
			svc, addr = "(control plane)", "-"
		}
		fmt.Printf("   %-19s %-17s %-21s %-7s %v\n", m.Node, svc, addr, m.State, m.Ready)
	}
	return nil
}

// nodeNames maps inbound addresses to node ids from a sidecar's gossip view.
func nodeNames(admin string) map[string]string {
	names := map[string]string{}
	ms, _ := members(admin)
	for _, m := range ms {
		if m.Address != "" {
			names[m.Address] = m.Node
		}
	}
	return names
}

// printClusters prints the endpoints of service, or of every service when
// service is "", as a sidecar sees them.
func printClusters(admin, service string) error {
	cs, err := clusters(admin)
	if err != nil {
		return err
	}
	names := nodeNames(admin)
	for _, c := range cs {
		if service != "" && c.Name != service {
			continue
		}
		fmt.Printf("   service %s (%s)\n", c.Name, c.LoadBalancer)
		for _, e := range c.Endpoints {
			fmt.Printf("     %-19s %-21s %-8s breaker=%-9s requests=%-4d latency-ewma=%.3fms\n",
				names[e.Address], e.Address, e.Health, e.breaker(), e.Requests, e.EWMAMillis)
		}
	}
	return nil
}

// printMetrics prints the lines of a /metrics page that start with one of
// prefixes and contain every one of the strings in must.
func printMetrics(url string, prefixes []string, must ...string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if hasAnyPrefix(line, prefixes) && containsAll(line, must) {
			fmt.Println("   " + line)
		}
	}
	return sc.Err()
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// controlPlaneVersion is the configuration version a sidecar applied from
// the control plane, from its GET /config_dump.
func controlPlaneVersion(admin string) (string, error) {
	var v struct {
		ControlPlane struct {
			Version string `json:"version"`
		} `json:"control_plane"`
	}
	err := getJSON("http://"+admin+"/config_dump", &v)
	return v.ControlPlane.Version, err
}

// meshctl runs bin/meshctl against the control plane, prints the command
// as a reader would type it (MESH_SERVER and MESH_DATA_DIR exported, as
// the start shows) and its output, indented.
func (d *demo) meshctl(ctx context.Context, args ...string) error {
	fmt.Printf("   $ meshctl %s\n", strings.Join(args, " "))
	out, err := d.meshctlOutput(ctx, args...)
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("     " + line)
	}
	return err
}

// meshctlOutput runs meshctl and returns its standard output and error,
// interleaved.
func (d *demo) meshctlOutput(ctx context.Context, args ...string) (string, error) {
	cmd, cancel := d.meshctlCommand(ctx, args...)
	defer cancel()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("meshctl %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// meshctlStdout runs meshctl and returns its standard output alone (a
// failure's error carries its standard error).
func (d *demo) meshctlStdout(ctx context.Context, args ...string) (string, error) {
	cmd, cancel := d.meshctlCommand(ctx, args...)
	defer cancel()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("meshctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// meshctlCommand is bin/meshctl with args, pointed at the control plane
// (https, verified against the bundle in MESH_DATA_DIR) and bounded in
// time; call cancel when it has run.
func (d *demo) meshctlCommand(ctx context.Context, args ...string) (*exec.Cmd, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "meshctl"), append([]string{"--timeout", "10s"}, args...)...) // #nosec G204 -- the demo's own binary
	cmd.Env = append(inheritedEnv(), "MESH_SERVER=https://"+d.cpAPI, "MESH_DATA_DIR="+d.cpData())
	return cmd, cancel
}

// cpData is the control plane's data directory.
func (d *demo) cpData() string { return filepath.Join(d.dir, "controlplane-data") }

// cpBundle is the mesh CA's trust bundle the control plane writes.
func (d *demo) cpBundle() string { return filepath.Join(d.cpData(), "ca-bundle.pem") }

// apiGet sends an authenticated GET to the control-plane API and returns
// the status and body.
func (d *demo) apiGet(path string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+d.cpAPI+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := d.cpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// sortedCounts renders counts as "a=1 b=2", in key order.
func sortedCounts(m map[string]int) string {
	keys := sortedKeys(m)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// rawRequest writes raw bytes and returns the status line and x-mesh-error.
func rawRequest(addr, raw string) (string, string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return "", "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	return resp.Proto + " " + resp.Status, resp.Header.Get("X-Mesh-Error"), nil
}

// fencingState is a sidecar's GET /fencing.
type fencingState struct {
	Fenced bool   `json:"fenced"`
	Reason string `json:"reason"`
	Source string `json:"source"`
	Epoch  uint64 `json:"epoch"`
	Quorum struct {
		Expected  int `json:"expected"`
		Reachable int `json:"reachable"`
		Needed    int `json:"needed"`
	} `json:"quorum"`
}

// waitUnfenced polls the sidecars' /fencing until none is fenced and all
// know the same epoch. A sidecar is fenced until the control plane has its
// gossip view and that of enough others to count a quorum (a report every
// 2 s); a write forwarded while epochs differ may be refused as stale.
func waitUnfenced(ctx context.Context, admins []string) (fencingState, error) {
	states := make([]fencingState, len(admins))
	err := poll(ctx, 20*time.Second, 100*time.Millisecond, func() (bool, error) {
		for i, a := range admins {
			if err := getJSON("http://"+a+"/fencing", &states[i]); err != nil {
				return false, err
			}
		}
		for _, s := range states {
			if s.Fenced || s.Epoch != states[0].Epoch {
				return false, nil
			}
		}
		return true, nil
	}, func() string { return fmt.Sprintf("sidecars still fenced or on different epochs: %+v", states) })
	return states[0], err
}

// waitMemberState polls a sidecar's /members until node is in state.
func waitMemberState(ctx context.Context, admin, node, state string) error {
	got := ""
	return poll(ctx, 20*time.Second, 50*time.Millisecond, func() (bool, error) {
		ms, err := members(admin)
		if err != nil {
			return false, err
		}
		for _, m := range ms {
			if m.Node == node {
				got = m.State
			}
		}
		return got == state, nil
	}, func() string { return fmt.Sprintf("%s/members: %s is %q, want %q", admin, node, got, state) })
}

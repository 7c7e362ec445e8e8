package plane

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testConfig(t *testing.T) Config {
	cfg := Default()
	cfg.XDS, cfg.API, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Debounce.Duration, cfg.DebounceMax.Duration = 20*time.Millisecond, 200*time.Millisecond
	cfg.ShutdownTimeout.Duration = 2 * time.Second
	return cfg
}

// stops holds each test plane's stop function (tests in this package do
// not run in parallel).
var stops = map[*Plane]func() <-chan struct{}{}

// stopPlane cancels p's Run; the channel closes when it has returned.
func stopPlane(t *testing.T, p *Plane) <-chan struct{} {
	t.Helper()
	return stops[p]()
}

// startPlane runs a control plane until the test ends.
func startPlane(t *testing.T, cfg Config, opts ...Option) *Plane {
	t.Helper()
	var logs bytes.Buffer
	p, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stops[p] = func() <-chan struct{} {
		cancel()
		c := make(chan struct{})
		go func() {
			select {
			case err := <-done:
				done <- err
			case <-time.After(10 * time.Second):
			}
			close(c)
		}()
		return c
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		if strings.Contains(logs.String(), p.Token()) {
			t.Error("the token appears in the log")
		}
	})
	return p
}

func apply(t *testing.T, p *Plane, kind, name, doc string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+p.APIAddr()+"/api/v1/resources/"+kind+"/"+name, strings.NewReader(doc))
	req.Header.Set("Authorization", "Bearer "+p.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("apply %s/%s: %s %s", kind, name, resp.Status, b)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	tok, created, err := LoadOrCreateToken(dir)
	if err != nil || !created || len(tok) != 64 {
		t.Fatalf("got %q %v %v", tok, created, err)
	}
	st, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode: %v %v, want 0600", st.Mode().Perm(), err)
	}
	again, created, err := LoadOrCreateToken(dir)
	if err != nil || created || again != tok {
		t.Errorf("second start: got %q %v %v, want the same token", again, created, err)
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cp.yaml")
	if err := os.WriteFile(file, []byte("xds: 127.0.0.1:1\napi: 127.0.0.1:2\ndataDir: /from/file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MESH_API": "127.0.0.1:3", "MESH_CONFIG": file}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := Load([]string{"--data-dir", "/from/flag"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.XDS != "127.0.0.1:1" || cfg.API != "127.0.0.1:3" || cfg.DataDir != "/from/flag" {
		t.Errorf("got xds %s api %s dataDir %s; want file, env, flag", cfg.XDS, cfg.API, cfg.DataDir)
	}
	for _, tt := range []struct{ yaml, want string }{
		{"xds: 127.0.0.1:1\nxDS: 127.0.0.1:2\n", "unknown field"},
		{"debounce: 5\n", "duration"},
		{"gossip: nonsense\n", "gossip"},
		{"join: [127.0.0.1:7946]\n", "join: given, but gossip is off"},
		{"log:\n  level: loud\n", "log.level"},
	} {
		if err := os.WriteFile(file, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load([]string{"--config", file}, func(string) (string, bool) { return "", false }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want an error containing %q", tt.yaml, err, tt.want)
		}
	}
}

// TestApplyRebuildsAndRestartKeepsPolicy: an API write leads to a new
// xDS generation that carries it, and a restarted control plane on the
// same data directory serves the same policy with the same token.
func TestApplyRebuildsAndRestartKeepsPolicy(t *testing.T) {
	cfg := testConfig(t)
	p := startPlane(t, cfg)
	v0 := p.XDS().Build().Version
	waitFor(t, "first build", func() bool { v0 = p.XDS().Build().Version; return v0 != "" })
	apply(t, p, "backendpolicies", "orders", "apiVersion: causeway.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {name: orders}\nspec: {targetRef: {name: orders}, loadBalancer: {type: round-robin}}\n")
	waitFor(t, "a rebuild after the write", func() bool { return p.XDS().Build().Version != v0 })

	// A second control plane on the same directory: the first holds the
	// database lock, so start it on a copy of the state after a clean stop.
	cfg2 := testConfig(t)
	cfg2.DataDir = cfg.DataDir
	stopped := stopPlane(t, p)
	<-stopped
	p2 := startPlane(t, cfg2)
	if p2.Token() != p.Token() {
		t.Error("the token changed across a restart")
	}
	rs, err := p2.Store().List("", "")
	if err != nil || len(rs) != 1 || rs[0].BackendPolicy == nil || rs[0].BackendPolicy.LoadBalancer.Type != "round-robin" {
		t.Errorf("after restart: %v %v", rs, err)
	}
}

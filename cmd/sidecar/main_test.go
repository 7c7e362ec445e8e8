package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// configTestdata is shared with the config package's tests.
var configTestdata = filepath.Join("..", "..", "proxy", "config", "testdata")

// noEnv is a lookupEnv with nothing set; the real environment is never read.
func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// runResult is what one call of run produced.
type runResult struct {
	code           int
	stdout, stderr string
}

// runWithin calls run and fails the test if it does not return within d.
func runWithin(t *testing.T, d time.Duration, env func(string) (string, bool), args ...string) runResult {
	t.Helper()
	done := make(chan runResult, 1)
	go func() {
		var out, errOut strings.Builder
		code := run(args, env, &out, &errOut)
		done <- runResult{code, out.String(), errOut.String()}
	}()
	select {
	case r := <-done:
		return r
	case <-time.After(d):
		t.Fatalf("run %q did not return within %v", args, d)
		return runResult{}
	}
}

func TestValidateGoodFile(t *testing.T) {
	file := filepath.Join(configTestdata, "good.yaml")
	r := runWithin(t, 5*time.Second, noEnv, "validate", "--config", file)
	if r.code != 0 {
		t.Fatalf("exit code: got %d, want 0 (stderr %q)", r.code, r.stderr)
	}
	if want := file + ": valid\n"; r.stdout != want {
		t.Errorf("stdout: got %q, want %q", r.stdout, want)
	}
	if r.stderr != "" {
		t.Errorf("stderr: got %q, want nothing", r.stderr)
	}
}

// TestValidateIgnoresEnvironment: validate checks the file alone.
func TestValidateIgnoresEnvironment(t *testing.T) {
	file := filepath.Join(configTestdata, "good.yaml")
	env := envOf(map[string]string{"MESH_LOG_LEVEL": "bogus", "MESH_SERVICE": "Bad_Name", "MESH_CONFIG": "/nonexistent"})
	r := runWithin(t, 5*time.Second, env, "validate", "--config", file)
	if r.code != 0 {
		t.Errorf("exit code: got %d, want 0 (stderr %q)", r.code, r.stderr)
	}
}

func TestValidateInvalidFileListsEveryError(t *testing.T) {
	file := filepath.Join(configTestdata, "invalid.yaml")
	r := runWithin(t, 5*time.Second, noEnv, "validate", "--config", file)
	if r.code != 1 {
		t.Fatalf("exit code: got %d, want 1 (stderr %q)", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout: got %q, want nothing", r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	paths := []string{"service", "appProtocol", "listeners.inbound", "upstreams.inventory.endpoints[1]",
		"upstreams.inventory.loadBalancer", "limits.maxHeaderCount", "drain.timeout", "log.level"}
	if len(lines) != len(paths) {
		t.Errorf("got %d error lines, want %d (one per invalid field):\n%s", len(lines), len(paths), r.stderr)
	}
	for _, p := range paths {
		prefix := file + ": " + p + ": "
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				found = true
			}
		}
		if !found {
			t.Errorf("no line starting %q in stderr:\n%s", prefix, r.stderr)
		}
	}
}

func TestValidateDecodeErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"unknown_top.yaml", []string{"unknown field", "retries"}},
		{"unknown_nested.yaml", []string{"unknown field", "maxHeaderByte"}},
		{"duplicate.yaml", []string{"app", "already set"}},
		{"wrong_type.yaml", []string{"maxHeaderCount"}},
		{"bad_duration.yaml", []string{"ten"}},
		{"no_such_file.yaml", []string{"no_such_file.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r := runWithin(t, 5*time.Second, noEnv, "validate", "--config", filepath.Join(configTestdata, tt.file))
			if r.code != 1 {
				t.Errorf("exit code: got %d, want 1 (stderr %q)", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not contain %q", r.stderr, w)
				}
			}
		})
	}
}

func TestValidateUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing --config", []string{"validate"}, "--config"},
		{"empty --config", []string{"validate", "--config", ""}, "--config"},
		{"unknown flag", []string{"validate", "--bogus"}, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runWithin(t, 5*time.Second, noEnv, tt.args...)
			if r.code != 2 {
				t.Errorf("exit code: got %d, want 2", r.code)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.want)
			}
		})
	}
}

// readyServer answers /ready with status and counts the calls.
func readyServer(t *testing.T, status int) (addr string, calls *atomic.Int32) {
	t.Helper()
	n := new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		n.Add(1)
		w.WriteHeader(status)
		fmt.Fprintf(w, "ready status %d\n", status)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), n
}

func TestHealthcheck(t *testing.T) {
	okAddr, okCalls := readyServer(t, http.StatusOK)
	badAddr, _ := readyServer(t, http.StatusServiceUnavailable)
	_, okPort, _ := net.SplitHostPort(okAddr)

	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"ready", nil, []string{"--health", okAddr}, 0, ""},
		{"unspecified host means loopback", nil, []string{"--health", "0.0.0.0:" + okPort}, 0, ""},
		{"empty host means loopback", nil, []string{"--health", ":" + okPort}, 0, ""},
		{"MESH_HEALTH sets the address", map[string]string{"MESH_HEALTH": okAddr}, nil, 0, ""},
		{"flag over MESH_HEALTH", map[string]string{"MESH_HEALTH": deadAddr}, []string{"--health", okAddr}, 0, ""},
		{"not ready", nil, []string{"--health", badAddr}, 1, "ready status 503"},
		{"nothing listening", nil, []string{"--health", deadAddr}, 1, "healthcheck:"},
		{"bad address", nil, []string{"--health", "nowhere"}, 2, "healthcheck:"},
		{"unknown flag", nil, []string{"--bogus"}, 2, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"healthcheck", "--timeout", "2s"}, tt.args...)
			r := runWithin(t, 5*time.Second, envOf(tt.env), args...)
			if r.code != tt.code {
				t.Errorf("exit code: got %d, want %d (stderr %q)", r.code, tt.code, r.stderr)
			}
			if tt.stderr != "" && !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.stderr)
			}
			if tt.code == 0 && r.stderr != "" {
				t.Errorf("stderr: got %q, want nothing", r.stderr)
			}
		})
	}
	if n := okCalls.Load(); n == 0 {
		t.Errorf("the ready server was called %d times, want at least 1", n)
	}
}

// TestHealthcheckTimeout: a health listener that never answers fails the
// check within --timeout.
func TestHealthcheckTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	start := time.Now()
	r := runWithin(t, 5*time.Second, noEnv, "healthcheck", "--timeout", "200ms", "--health", srv.Listener.Addr().String())
	if r.code != 1 {
		t.Errorf("exit code: got %d, want 1 (stderr %q)", r.code, r.stderr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v, want about the 200ms timeout", d)
	}
}

func TestRunWithoutServiceExits2(t *testing.T) {
	r := runWithin(t, 5*time.Second, noEnv)
	if r.code != 2 {
		t.Fatalf("exit code: got %d, want 2 (stderr %q)", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "service") {
		t.Errorf("stderr %q does not name the field service", r.stderr)
	}
}

func TestRunConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--service", "a", "--bogus"}, nil, "bogus"},
		{"invalid value", []string{"--service", "a", "--app", "nohost"}, nil, "app"},
		{"bad env value", []string{"--service", "a"}, map[string]string{"MESH_DRAIN_TIMEOUT": "soon"}, "MESH_DRAIN_TIMEOUT"},
		{"unknown key in file", []string{"--config", filepath.Join(configTestdata, "unknown_top.yaml")}, nil, "retries"},
		{"invalid file", []string{"--config", filepath.Join(configTestdata, "invalid.yaml")}, nil, "upstreams.inventory.loadBalancer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runWithin(t, 5*time.Second, envOf(tt.env), tt.args...)
			if r.code != 2 {
				t.Errorf("exit code: got %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.want)
			}
		})
	}
}

func TestRunHelpAndVersion(t *testing.T) {
	r := runWithin(t, 5*time.Second, noEnv, "--help")
	if r.code != 0 || !strings.Contains(r.stderr, "--service") {
		t.Errorf("--help: got code %d, stderr %q; want 0 and usage naming --service", r.code, r.stderr)
	}
	r = runWithin(t, 5*time.Second, noEnv, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "sidecar ") {
		t.Errorf("version: got code %d, stdout %q; want 0 and \"sidecar VERSION\"", r.code, r.stdout)
	}
}

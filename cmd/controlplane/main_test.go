package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func noEnv(string) (string, bool) { return "", false }

func TestVersionAndBadConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"version"}, noEnv, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "controlplane ") {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"--xds", "nonsense"}, noEnv, &out, &errb); code != 2 || !strings.Contains(errb.String(), "xds:") {
		t.Errorf("bad flag value: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	env := func(k string) (string, bool) {
		if k == "MESH_DEBOUNCE" {
			return "soon", true
		}
		return "", false
	}
	if code := run(context.Background(), nil, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "MESH_DEBOUNCE") {
		t.Errorf("bad env value: exit %d, stderr %q", code, errb.String())
	}
}

// TestRunHealthcheckAndGracefulStop starts the binary's run loop, checks
// healthcheck, then cancels (as SIGTERM does) and expects a clean exit.
func TestRunHealthcheckAndGracefulStop(t *testing.T) {
	dir := t.TempDir()
	api := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--xds", freeAddr(t), "--api", api, "--data-dir", dir}, noEnv, &bytes.Buffer{}, &logs)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for healthcheck([]string{"--api", api, "--timeout", "200ms"}, noEnv, &bytes.Buffer{}) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("healthcheck never passed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after stop; logs:\n%s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not stop")
	}
	tok, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil || len(bytes.TrimSpace(tok)) == 0 {
		t.Fatalf("token file: %v", err)
	}
	if strings.Contains(logs.String(), string(bytes.TrimSpace(tok))) {
		t.Error("the token was logged")
	}
	if !strings.Contains(logs.String(), filepath.Join(dir, "api-token")) {
		t.Error("the log does not say where the token is")
	}
	if code := healthcheck([]string{"--api", api, "--timeout", "200ms"}, noEnv, &bytes.Buffer{}); code != 1 {
		t.Errorf("healthcheck after stop: exit %d, want 1", code)
	}
}

func TestTraceFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, noEnv, &out, &errb); code != 0 ||
		!strings.Contains(errb.String(), "--trace-buffer-spans") || !strings.Contains(errb.String(), "--trace-forward") {
		t.Errorf("--help: exit %d, usage %q", code, errb.String())
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--trace-forward", "collector:4318"}, nil, "trace.forward"},
		{[]string{"--trace-buffer-spans", "-1"}, nil, "trace.bufferSpans"},
		{nil, map[string]string{"MESH_TRACE_BUFFER_SPANS": "lots"}, "MESH_TRACE_BUFFER_SPANS"},
	} {
		errb.Reset()
		env := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
		if code := run(context.Background(), tt.args, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want exit 2 naming %q", tt.args, tt.env, code, errb.String(), tt.want)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/plane"
)

// startRun runs the binary's run loop with args until the test ends.
func startRun(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs bytes.Buffer
	go func() { done <- run(ctx, args, noEnv, &bytes.Buffer{}, &logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("exit %d after stop; logs:\n%s", code, logs.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("did not stop")
		}
	})
}

// healthy polls healthcheck with args (and env) until it exits 0.
func healthy(t *testing.T, env map[string]string, args ...string) {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var errb bytes.Buffer
	for {
		errb.Reset()
		if healthcheck(append(args, "--timeout", "500ms"), lookup, &errb) == 0 {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("healthcheck %v never passed; last: %s", args, errb.String())
		case <-tick.C:
		}
	}
}

func TestHealthcheckTLS(t *testing.T) {
	dir, api := t.TempDir(), freeAddr(t)
	startRun(t, "--tls", "--xds", freeAddr(t), "--api", api, "--data-dir", dir)
	healthy(t, nil, "--tls", "--api", api, "--data-dir", dir)

	// The server's own variables are enough: a container HEALTHCHECK
	// shares the server's environment.
	healthy(t, map[string]string{"MESH_TLS": "true", "MESH_API": api, "MESH_DATA_DIR": dir})

	otherDir := t.TempDir()
	if _, err := ca.LoadOrCreate(otherDir, "causeway.local"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"--ca-file given", []string{"--tls", "--api", api, "--ca-file", filepath.Join(dir, plane.BundleFile)}, 0, ""},
		{"without --tls", []string{"--api", api}, 1, "the control plane serves TLS: run the healthcheck with --tls"},
		{"another mesh's bundle", []string{"--tls", "--api", api, "--ca-file", filepath.Join(otherDir, plane.BundleFile)}, 1, "is not signed by a root in"},
		{"no bundle in the data dir", []string{"--tls", "--api", api, "--data-dir", t.TempDir()}, 1, "reading the trust bundle"},
		{"bad flag value", []string{"--tls", "--api", "nonsense"}, 2, "api:"},
		{"bad timeout", []string{"--tls", "--api", api, "--data-dir", dir, "--timeout", "0s"}, 2, "--timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errb bytes.Buffer
			code := healthcheck(tt.args, noEnv, &errb)
			if code != tt.code || !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d containing %q", code, errb.String(), tt.code, tt.want)
			}
		})
	}
}

func TestHealthcheckTLSHostsAndPlaintext(t *testing.T) {
	// A serving certificate without 127.0.0.1: the healthcheck verifies the
	// name the server's configuration gives it.
	dir, api := t.TempDir(), freeAddr(t)
	startRun(t, "--tls", "--tls-host", "cp.example.test", "--xds", freeAddr(t), "--api", api, "--data-dir", dir)
	healthy(t, nil, "--tls", "--tls-host", "cp.example.test", "--api", api, "--data-dir", dir)

	plainAPI := freeAddr(t)
	startRun(t, "--xds", freeAddr(t), "--api", plainAPI, "--data-dir", t.TempDir())
	healthy(t, nil, "--api", plainAPI)
	var errb bytes.Buffer
	if code := healthcheck([]string{"--tls", "--api", plainAPI, "--data-dir", dir, "--timeout", "500ms"}, noEnv, &errb); code != 1 ||
		!strings.Contains(errb.String(), "does not serve TLS") {
		t.Fatalf("--tls against a plaintext control plane: exit %d, stderr %q", code, errb.String())
	}
}

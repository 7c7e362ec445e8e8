package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
)

// These tests run the real sidecar binary as a separate process.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func sidecarBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sidecar-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sidecar")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startEcho(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: echoserver.Handler(name), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

type sidecarProc struct {
	cmd                              *exec.Cmd
	inbound, outbound, admin, health string
	exited                           chan error
}

// startProc runs the sidecar binary with the given extra arguments and
// waits until it is ready.
func startProc(t *testing.T, extra ...string) *sidecarProc {
	t.Helper()
	return startProcArgs(t, func() []string { return extra })
}

// startProcArgs is startProc with arguments built afresh for every try.
// Ports are chosen by probing, so another process (or an outgoing
// connection's ephemeral port) can take one between the probe and the
// sidecar's bind: a start-up that fails with "address already in use" is
// retried on fresh ports, up to five tries.
func startProcArgs(t *testing.T, extra func() []string) *sidecarProc {
	t.Helper()
	const tries = 5
	for try := 1; ; try++ {
		p, log, err := tryStartProc(t, extra())
		if err == nil {
			return p
		}
		if try < tries && strings.Contains(log, "address already in use") {
			t.Logf("sidecar start-up try %d lost a port race, retrying on fresh ports: %v", try, err)
			continue
		}
		t.Fatal(err) // the cleanup prints the log
	}
}

// tryStartProc starts one sidecar process on freshly probed ports and
// waits up to 10 s for readiness. On failure it returns the process's log.
func tryStartProc(t *testing.T, extra []string) (*sidecarProc, string, error) {
	t.Helper()
	p := &sidecarProc{inbound: freeAddr(t), outbound: freeAddr(t), admin: freeAddr(t), health: freeAddr(t), exited: make(chan error, 1)}
	args := append([]string{"--inbound", p.inbound, "--outbound", p.outbound, "--admin", p.admin, "--health", p.health, "--gossip", "off"}, extra...)
	p.cmd = exec.Command(sidecarBinary(t), args...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "sidecar.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	readLog := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("sidecar log:\n%s", readLog())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !ready(p.health) {
		if time.Now().After(deadline) {
			_ = p.cmd.Process.Kill()
			return nil, readLog(), errors.New("sidecar not ready within 10s")
		}
		select {
		case err := <-p.exited:
			p.exited <- err // the cleanup's Kill is harmless on an exited process
			return nil, readLog(), fmt.Errorf("sidecar exited during start-up: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p, "", nil
}

var probe = &http.Client{Timeout: time.Second}

func ready(health string) bool {
	resp, err := probe.Get("http://" + health + "/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestSIGTERMDrainsWithoutFailures sends SIGTERM while a bounded load runs
// through the sidecar. Callers follow readiness; none may see a failure,
// and the process must exit 0 within the drain period plus its timeout.
func TestSIGTERMDrainsWithoutFailures(t *testing.T) {
	app := startEcho(t, "echo-1")
	p := startProc(t, "--service", "echo", "--app", app, "--drain-period", "500ms", "--drain-timeout", "5s", "--log-level", "warn")

	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for i := 0; i < 3000 && ctx.Err() == nil; i++ {
				if !ready(p.health) {
					return // readiness says go elsewhere
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.inbound+"/", nil)
				req.Host = "echo"
				sent.Add(1)
				resp, err := c.Do(req)
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	for sent.Load() < 300 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("sidecar exited with %v, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar still running 10s after SIGTERM")
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed, want 0", f, sent.Load())
	}
	t.Logf("%d requests, 0 failed; exited %v after SIGTERM", sent.Load(), time.Since(start).Round(time.Millisecond))
}

// TestSIGHUPReloadsTheFile changes the configuration file and sends SIGHUP:
// the new upstream serves; a broken file is refused and the running
// configuration kept.
func TestSIGHUPReloadsTheFile(t *testing.T) {
	a := startProc(t, "--service", "svc", "--app", startEcho(t, "A"), "--drain-period", "0s")
	b := startProc(t, "--service", "svc", "--app", startEcho(t, "B"), "--drain-period", "0s")
	file := filepath.Join(t.TempDir(), "client.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("service: client\nupstreams:\n  svc:\n    endpoints: [\"" + a.inbound + "\"]\n")
	c := startProc(t, "--config", file, "--drain-period", "0s")

	instance := func() string {
		req, _ := http.NewRequest("GET", "http://"+c.outbound+"/", nil)
		req.Host = "svc"
		resp, err := probe.Do(req)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		return resp.Header.Get(echoserver.InstanceHeader)
	}
	generation := func() int {
		resp, err := probe.Get("http://" + c.admin + "/config_dump")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var v struct{ Generation int }
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return v.Generation
	}
	if got := instance(); got != "A" {
		t.Fatalf("before reload: served by %q, want A", got)
	}
	write("service: client\nupstreams:\n  svc:\n    endpoints: [\"" + b.inbound + "\"]\n")
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "generation 2", func() bool { return generation() == 2 })
	if got := instance(); got != "B" {
		t.Fatalf("after reload: served by %q, want B", got)
	}
	write("service: client\nupstreams:\n  svc:\n    endpoints: [\"not-an-address\"]\n")
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the broken file to be refused", func() bool {
		resp, err := probe.Get("http://" + c.admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `mesh_config_reloads_total{result="error"} 1`)
	})
	if got := instance(); got != "B" {
		t.Fatalf("after a refused reload: served by %q, want B", got)
	}
	// The refused reload changes nothing; a valid one after it still works.
	write("service: client\nupstreams:\n  svc:\n    endpoints: [\"" + a.inbound + "\"]\n")
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "generation 3", func() bool { return generation() == 3 })
	if got := instance(); got != "A" {
		t.Fatalf("after the third reload: served by %q, want A", got)
	}
	select {
	case err := <-c.exited:
		t.Fatalf("sidecar exited: %v", err)
	default:
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

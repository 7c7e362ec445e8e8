package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bounds of process handling.
const (
	// stopGrace is how long stopAll waits after SIGTERM before SIGKILL.
	stopGrace = 10 * time.Second
	// readyTimeout bounds waiting for one process to answer ready.
	readyTimeout = 20 * time.Second
)

// demo is one run: the processes it started and where their files are.
type demo struct {
	bin      string // directory of the binaries
	policies string // directory of the example policies
	dir      string // temporary directory: logs, control-plane data, sidecar files
	keep     bool   // keep dir after a successful run

	procs []*proc

	// Set once the control plane runs.
	cpAPI, cpXDS, cpGossip string
	token                  string
	tracesMounted          bool
	// cpClient verifies the control plane's API against the mesh CA's
	// bundle (cpBundle); roots holds the same certificates.
	cpClient *http.Client
	roots    *x509.CertPool
	// tokenFiles holds each service's bootstrap token file.
	tokenFiles map[string]string
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{} // closed when Wait returned
	frozen bool          // stopped with SIGSTOP and not continued yet
}

// portAllocator hands out unused loopback addresses. It keeps each port's
// listener open until release, so that the kernel cannot hand the same port
// out twice; the processes then bind them (a port another program takes in
// between makes that process fail, and the demo with it).
type portAllocator struct {
	held []net.Listener
	err  error
}

// next returns an unused loopback HOST:PORT ("" after a failure, which
// release reports).
func (a *portAllocator) next() string {
	if a.err != nil {
		return ""
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		a.err = fmt.Errorf("no free loopback port: %w", err)
		return ""
	}
	a.held = append(a.held, ln)
	return ln.Addr().String()
}

// sidecar returns the five addresses of one sidecar.
func (a *portAllocator) sidecar() sidecarPorts {
	return sidecarPorts{a.next(), a.next(), a.next(), a.next(), a.next()}
}

// release frees every port for the processes to bind, and returns the
// first error met.
func (a *portAllocator) release() error {
	for _, ln := range a.held {
		ln.Close()
	}
	a.held = nil
	return a.err
}

// sidecarPorts are one sidecar's listener addresses.
type sidecarPorts struct{ inbound, outbound, admin, health, gossip string }

// inheritedEnv is the demo's environment without MESH_* variables: every
// process it starts is configured by the demo alone (a MESH_TOKEN or
// MESH_SERVER exported for another mesh must not leak in).
func inheritedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESH_") {
			env = append(env, kv)
		}
	}
	return env
}

// start runs bin/args[0] with args[1:], its output in DIR/name.log and env
// added to the demo's own environment.
func (d *demo) start(name string, env []string, args ...string) error {
	logf, err := os.Create(filepath.Join(d.dir, name+".log"))
	if err != nil {
		return err
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(filepath.Join(d.bin, args[0]), args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(inheritedEnv(), env...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	d.procs = append(d.procs, p)
	return nil
}

// tracingEnv points a sidecar's span exporter at the control plane's
// embedded OTLP receiver (https on the API port, verified against the mesh
// CA's bundle through the standard OTEL_EXPORTER_OTLP_CERTIFICATE),
// exporting every 200 ms so the demo need not wait for the default 5 s
// batch delay.
func (d *demo) tracingEnv() []string {
	if !d.tracesMounted {
		return nil
	}
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=https://" + d.cpAPI,
		"OTEL_EXPORTER_OTLP_CERTIFICATE=" + d.cpBundle(),
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=200",
	}
}

// sidecar starts a sidecar for node of service in front of app. It joins
// the control plane's gossip port, obtains its mesh certificate with its
// service's bootstrap token, speaks mutual TLS only (strict) to other
// sidecars and to the control plane, takes its configuration from the
// control plane over xDS and exports spans to it. extra are further flags.
func (d *demo) sidecar(service, node, app, proto string, p sidecarPorts, extra ...string) error {
	token, ok := d.tokenFiles[service]
	if !ok {
		return fmt.Errorf("sidecar %s: no bootstrap token for service %s", node, service)
	}
	args := []string{"sidecar", "--service", service, "--node-id", node, "--app", app, "--app-protocol", proto,
		"--inbound", p.inbound, "--outbound", p.outbound, "--admin", p.admin, "--health", p.health,
		"--gossip", p.gossip, "--join", d.cpGossip, "--control-plane", d.cpXDS,
		"--mtls", "strict", "--ca-bundle", d.cpBundle(), "--bootstrap-token-file", token,
		"--drain-period", "300ms", "--drain-timeout", "5s"}
	return d.start(node+"-sidecar", d.tracingEnv(), append(args, extra...)...)
}

func (d *demo) find(name string) *proc {
	for _, p := range d.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// pids returns the process ids of the named processes, space-separated.
func (d *demo) pids(names ...string) string {
	var ids []string
	for _, n := range names {
		if p := d.find(n); p != nil {
			ids = append(ids, strconv.Itoa(p.cmd.Process.Pid))
		}
	}
	return strings.Join(ids, " ")
}

// kill ends a started process at once (SIGKILL), as a crash would.
func (d *demo) kill(name string) {
	if p := d.find(name); p != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stop ends a started process gracefully: SIGTERM, then SIGKILL if it has
// not exited within stopGrace.
func (d *demo) stop(name string) {
	if p := d.find(name); p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// freeze stops the named processes with SIGSTOP: they keep their sockets
// (the kernel still accepts connections and queues packets) but answer
// nothing, as if a network cut had isolated them. thaw, or stopAll,
// continues them.
func (d *demo) freeze(names ...string) error {
	for _, n := range names {
		p := d.find(n)
		if p == nil {
			return fmt.Errorf("freeze %s: not started", n)
		}
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return fmt.Errorf("freeze %s: %w", n, err)
		}
		p.frozen = true
	}
	return nil
}

// thaw continues every frozen process (SIGCONT) and returns the first
// error met; it tries them all.
func (d *demo) thaw() error {
	var first error
	for _, p := range d.procs {
		if !p.frozen {
			continue
		}
		if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil && first == nil {
			first = fmt.Errorf("thaw %s: %w", p.name, err)
		}
		p.frozen = false
	}
	return first
}

// stopAll sends SIGTERM to every process still running, newest first,
// waits up to stopGrace for all of them together, then kills the rest. It
// returns how many had to be killed. A frozen process is continued after
// its SIGTERM: stopped, it would not act on it.
func (d *demo) stopAll() int {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			if p.frozen {
				_ = p.cmd.Process.Signal(syscall.SIGCONT)
				p.frozen = false
			}
		}
	}
	deadline := time.After(stopGrace)
	killed := 0
	for _, p := range d.procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = p.cmd.Process.Kill()
			<-p.done
			killed++
		}
	}
	d.procs = nil
	return killed
}

// waitReady polls url with c until it answers 200.
func waitReady(ctx context.Context, c *http.Client, url string) error {
	return poll(ctx, readyTimeout, 50*time.Millisecond, func() (bool, error) {
		resp, err := c.Get(url)
		// An error means the process is not listening yet: keep polling.
		ready := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			resp.Body.Close()
		}
		return ready, nil
	}, func() string { return url + " not ready" })
}

// errTimeout marks a poll that ran out of time.
var errTimeout = errors.New("timed out")

// poll calls cond every interval until it reports done, fails, or limit
// passes; what describes what was awaited for the error.
func poll(ctx context.Context, limit, interval time.Duration, cond func() (bool, error), what func() string) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		done, err := cond()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s after %v: %w", what(), limit, errTimeout)
			}
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

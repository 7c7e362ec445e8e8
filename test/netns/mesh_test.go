//go:build netns && linux

package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvcheck"
	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

// Addresses and ports of the mesh inside the namespaces.
const (
	cpName       = "cp"
	cpAddr       = dataSubnetPrefix + "2"
	xdsPort      = "18000"
	gossipPort   = "7946"
	inboundPort  = "15006"
	kvAddr       = "127.0.0.1:8080"
	outboundAddr = "127.0.0.1:15001"
	adminAddr    = "127.0.0.1:15000"
	// kvService is the service name the sidecars front and clients call.
	kvService = "kv"
)

// requestTimeout bounds every request the test sends. A request routed
// across a fresh cut waits for the sidecar's own timeout, so this is
// longer than any bound the tests assert.
const requestTimeout = 10 * time.Second

// mesh is the control plane and the kv nodes with their sidecars, running
// in a topology.
type mesh struct {
	t       *testing.T
	topo    *topology
	dir     string
	nodes   []string // n1…nN, sorted
	clients map[string]*http.Client
	state   *stateFiles
}

// fenceView is a sidecar's GET /fencing.
type fenceView struct {
	Fenced  bool   `json:"fenced"`
	Reason  string `json:"reason"`
	Source  string `json:"source"`
	Epoch   uint64 `json:"epoch"`
	Enabled bool   `json:"enabled"`
	Quorum  struct {
		Expected  int `json:"expected"`
		Reachable int `json:"reachable"`
		Needed    int `json:"needed"`
	} `json:"quorum"`
}

// startMesh builds the topology of n kv nodes and a control plane, starts
// every process and waits until every sidecar is ready, writable and sees
// all n nodes. The kv apps replicate to each other through the mesh.
func startMesh(t *testing.T, n int) *mesh {
	t.Helper()
	bin := binaries(t)
	state := newStateFiles()
	addrs := map[string]string{cpName: cpAddr}
	m := &mesh{t: t, clients: make(map[string]*http.Client), state: state, dir: artifactsDir(t)}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("n%d", i)
		addrs[name] = fmt.Sprintf("%s%d", dataSubnetPrefix, 10+i)
		m.nodes = append(m.nodes, name)
	}
	m.topo = newTopology(t, state, addrs)
	for name, nd := range m.topo.nodes {
		m.clients[name] = clientIn(nsPath(nd.ns), requestTimeout)
	}
	t.Cleanup(func() {
		for _, c := range m.clients {
			c.CloseIdleConnections()
		}
	})

	m.start(cpName, filepath.Join(bin, "controlplane"),
		"--xds", cpAddr+":"+xdsPort, "--api", "127.0.0.1:18080",
		"--data-dir", m.dataDir(cpName), "--gossip", cpAddr+":"+gossipPort, "--node-name", "controlplane")
	seeds := cpAddr + ":" + gossipPort + "," + addrs[m.nodes[0]] + ":" + gossipPort
	for _, name := range m.nodes {
		addr := addrs[name]
		// Each kv is a replica: it replicates the writes it accepts to
		// every other node through its own sidecar, pinning each request
		// to the peer's sidecar inbound address (x-mesh-endpoint).
		var peers []string
		for _, p := range m.nodes {
			if p != name {
				peers = append(peers, addrs[p]+":"+inboundPort)
			}
		}
		kv := m.start(name, filepath.Join(bin, "kv"), "--listen", kvAddr, "--name", name,
			"--peers", strings.Join(peers, ","), "--mesh", outboundAddr, "--service", kvService)
		m.waitUp(kv, name, "http://"+kvAddr+"/healthz")
		m.start(name, filepath.Join(bin, "sidecar"),
			"--service", kvService, "--node-id", name, "--app", kvAddr, "--app-protocol", "http1",
			"--inbound", addr+":"+inboundPort, "--outbound", outboundAddr, "--admin", adminAddr,
			"--health", "127.0.0.1:15020", "--gossip", addr+":"+gossipPort, "--advertise", addr,
			"--join", seeds, "--control-plane", cpAddr+":"+xdsPort,
			"--data-dir", m.dataDir(name), "--drain-period", "0s", "--drain-timeout", "2s")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if err := m.waitSteady(ctx); err != nil {
		t.Fatalf("mesh did not come up: %v (logs in %s)", err, m.dir)
	}
	return m
}

func (m *mesh) dataDir(name string) string {
	d := filepath.Join(m.dir, name+"-data")
	if err := os.MkdirAll(d, 0o700); err != nil {
		m.t.Fatal(err)
	}
	return d
}

// process is a program the test started; done closes when it exits.
type process struct {
	name, log string
	done      chan struct{}
}

// start runs bin with args inside node's namespace, its output in
// DIR/NODE-PROGRAM.log; t.Cleanup stops it by PID.
func (m *mesh) start(node, bin string, args ...string) *process {
	t := m.t
	t.Helper()
	logPath := filepath.Join(m.dir, node+"-"+filepath.Base(bin)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", m.topo.nodes[node].ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("starting %s on %s: %v", bin, node, err)
	}
	m.state.add("pids", fmt.Sprint(cmd.Process.Pid))
	p := &process{name: node + "/" + filepath.Base(bin), log: logPath, done: make(chan struct{})}
	done := p.done
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	// Registered after the topology's clean-up, so it runs before it.
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return p
}

// waitUp waits until url (inside node) answers 200, and fails the test
// when p exits first or nothing answers for 20 s.
func (m *mesh) waitUp(p *process, node, url string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(m.t.Context(), 20*time.Second)
	defer cancel()
	err := poll(ctx, 50*time.Millisecond, func() bool {
		select {
		case <-p.done:
			cancel()
			return false
		default:
		}
		return m.status(ctx, node, url) == http.StatusOK
	})
	if err != nil {
		out, _ := os.ReadFile(p.log)
		m.t.Fatalf("%s did not come up (%v); its log:\n%s", p.name, err, out)
	}
}

// waitSteady waits until every sidecar is ready, not fenced, sees every
// node and accepts a write.
func (m *mesh) waitSteady(ctx context.Context) error {
	var last error
	for {
		last = m.steady(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %w", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (m *mesh) steady(ctx context.Context) error {
	for _, n := range m.nodes {
		f, err := m.fencing(ctx, n)
		if err != nil {
			return err
		}
		if !f.Enabled || f.Fenced || f.Epoch == 0 || f.Quorum.Reachable < len(m.nodes) {
			return fmt.Errorf("%s: fencing %+v", n, f)
		}
	}
	for _, n := range m.nodes {
		if a := m.put(ctx, n, "steady-"+n, fmt.Sprintf("steady-%s-%d", n, time.Now().UnixNano())); a.Outcome != kvcheck.Acked {
			return fmt.Errorf("%s: write %s (status %d %s)", n, a.Outcome, a.Status, a.MeshError)
		}
	}
	return nil
}

// put writes value under key through node's sidecar outbound, as the app
// beside it would, and classifies the answer.
func (m *mesh) put(ctx context.Context, node, key, value string) kvcheck.Attempt {
	a := kvcheck.Attempt{Node: node, Key: key, Value: value, Start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+outboundAddr+"/kv/"+key, strings.NewReader(value))
	if err != nil {
		panic(err) // constant URL shape: a programming error
	}
	req.Host = kvService
	resp, err := m.clients[node].Do(req)
	a.End = time.Now()
	if err != nil {
		return a
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	a.Status, a.MeshError = resp.StatusCode, resp.Header.Get("X-Mesh-Error")
	switch {
	case resp.StatusCode == http.StatusOK && resp.Header.Get(kvstore.NodeHeader) != "":
		a.Outcome = kvcheck.Acked
	case a.MeshError == "fenced" || a.MeshError == "stale_epoch":
		a.Outcome = kvcheck.Refused
	}
	return a
}

// readResult is the answer to a GET through a sidecar.
type readResult struct {
	status  int
	meshErr string
	from    string // the kv instance that answered
	err     error
}

// answered reports whether a kv app answered the read (with the value or
// a 404), rather than the mesh or the network.
func (r readResult) answered() bool {
	return r.err == nil && r.from != "" && (r.status == http.StatusOK || r.status == http.StatusNotFound)
}

func (r readResult) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("status %d x-mesh-error %q from %q", r.status, r.meshErr, r.from)
}

// get reads key through node's sidecar outbound.
func (m *mesh) get(ctx context.Context, node, key string) readResult {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+outboundAddr+"/kv/"+key, nil)
	if err != nil {
		panic(err)
	}
	req.Host = kvService
	resp, err := m.clients[node].Do(req)
	if err != nil {
		return readResult{err: err}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return readResult{status: resp.StatusCode, meshErr: resp.Header.Get("X-Mesh-Error"), from: resp.Header.Get(kvstore.NodeHeader)}
}

// fencing returns node's sidecar's GET /fencing.
func (m *mesh) fencing(ctx context.Context, node string) (fenceView, error) {
	var f fenceView
	err := m.getJSON(ctx, node, "http://"+adminAddr+"/fencing", &f)
	return f, err
}

// history returns node's kv app's GET /history, read directly from the
// app (not through the mesh).
func (m *mesh) history(ctx context.Context, node string) ([]kvstore.Write, error) {
	var h []kvstore.Write
	err := m.getJSON(ctx, node, "http://"+kvAddr+"/history", &h)
	return h, err
}

// histories collects every node's history.
func (m *mesh) histories(ctx context.Context) ([]kvstore.Write, error) {
	var all []kvstore.Write
	for _, n := range m.nodes {
		h, err := m.history(ctx, n)
		if err != nil {
			return nil, err
		}
		all = append(all, h...)
	}
	return all, nil
}

// status returns the status code of GET url from inside node, or 0.
func (m *mesh) status(ctx context.Context, node, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := m.clients[node].Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (m *mesh) getJSON(ctx context.Context, node, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := m.clients[node].Do(req)
	if err != nil {
		return fmt.Errorf("%s: GET %s: %w", node, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: GET %s: %w", node, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: GET %s: status %d: %s", node, url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: GET %s: decoding: %w", node, url, err)
	}
	return nil
}

// others returns the nodes not in set, sorted.
func (m *mesh) others(set []string) []string {
	var out []string
	for _, n := range m.nodes {
		if !slices.Contains(set, n) {
			out = append(out, n)
		}
	}
	return out
}

// attempts is a concurrency-safe log of write attempts.
type attempts struct {
	mu  sync.Mutex
	all []kvcheck.Attempt
}

func (l *attempts) add(a kvcheck.Attempt) {
	l.mu.Lock()
	l.all = append(l.all, a)
	l.mu.Unlock()
}

func (l *attempts) list() []kvcheck.Attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binaries returns the directory holding sidecar, controlplane and kv:
// $CW_NETNS_BIN when set (run.sh builds them there), or a fresh static
// build shared by the tests of this run. It skips the test when the
// tier cannot run here.
func binaries(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the netns tier needs root (network namespaces, veths, bridges); run test/netns/run.sh as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the netns tier needs iproute2's ip command: ", err)
	}
	if d := os.Getenv("CW_NETNS_BIN"); d != "" {
		return d
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "cw-netns-bin-")
		if binErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", binDir+"/", "./cmd/sidecar", "./cmd/controlplane", "./examples/kv")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building binaries: %w: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// artifactsDir is where a test's logs and data directories go:
// $CW_NETNS_ARTIFACTS/TEST when set (run.sh keeps it on failure), else a
// temporary directory removed after the test.
func artifactsDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("CW_NETNS_ARTIFACTS")
	if base == "" {
		return t.TempDir()
	}
	d := filepath.Join(base, t.Name())
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// poll calls f every interval until it returns true or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() bool) error {
	for {
		if f() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

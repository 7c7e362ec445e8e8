package proxy

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/discovery"
	"github.com/causeway-mesh/causeway/proxy/config"
	"github.com/causeway-mesh/causeway/proxy/fencing"
)

// recordingApp counts the requests that reached it and keeps the epoch
// header each carried.
type recordingApp struct {
	mu   sync.Mutex
	seen []string // METHOD epoch
}

func (a *recordingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	a.mu.Lock()
	a.seen = append(a.seen, r.Method+" "+r.Header.Get(HeaderEpoch))
	a.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (a *recordingApp) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.seen
	a.seen = nil
	return s
}

func send(t *testing.T, method, url, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), method, url, strings.NewReader(body))
	req.Host = "orders"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h1Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestFencingRefusesWritesAndServesReads(t *testing.T) {
	app := &recordingApp{}
	m := startMesh(t, "orders", startApp(t, app), config.ProtocolHTTP1)
	out := "http://" + m.client.addr("outbound") + "/items"
	m.client.fence.SetEnabled(true) // as fencing.mode: on, or a control plane, would
	m.server.fence.SetEnabled(true)
	m.client.fence.SetStability(0) // the heal hysteresis is tested in proxy/fencing
	m.server.fence.SetStability(0)

	// Writable: the write reaches the app under the client's epoch.
	m.client.fence.SetRemote(fencing.Verdict{Epoch: 4}, time.Minute)
	if resp, _ := send(t, "POST", out, "x", nil); resp.StatusCode != 200 {
		t.Fatalf("write while writable: %d", resp.StatusCode)
	}
	if got := app.take(); len(got) != 1 || got[0] != "POST 4" {
		t.Fatalf("app saw %v, want [POST 4]", got)
	}

	// The caller's side lost the quorum: writes answered at once, reads pass.
	m.client.fence.SetLocal(fencing.Verdict{Fenced: true, Reason: "1 of 3", Quorum: fencing.NewQuorum(3, 1)})
	resp, _ := send(t, "POST", out, "x", nil)
	if resp.StatusCode != 503 || resp.Header.Get(HeaderError) != "fenced" {
		t.Fatalf("write while fenced: %d %q", resp.StatusCode, resp.Header.Get(HeaderError))
	}
	if resp, _ := send(t, "GET", out, "", nil); resp.StatusCode != 200 {
		t.Fatalf("read while fenced: %d", resp.StatusCode)
	}
	if got := app.take(); len(got) != 1 || got[0] != "GET " {
		t.Fatalf("app saw %v, want only the read", got)
	}

	// The receiving side is fenced: the write is refused there.
	m.client.fence.SetLocal(fencing.Verdict{Quorum: fencing.NewQuorum(3, 3)})
	m.client.fence.SetRemote(fencing.Verdict{Epoch: 4}, time.Minute) // a verdict since the view recovered
	m.server.fence.SetLocal(fencing.Verdict{Fenced: true, Reason: "1 of 3"})
	resp, _ = send(t, "PUT", out, "x", nil)
	if resp.StatusCode != 503 || resp.Header.Get(HeaderError) != "fenced" {
		t.Fatalf("write into a fenced sidecar: %d %q", resp.StatusCode, resp.Header.Get(HeaderError))
	}
	if got := app.take(); len(got) != 0 {
		t.Fatalf("app saw %v, want nothing", got)
	}

	// The receiver knows a newer epoch than the caller: stale.
	m.server.fence.SetLocal(fencing.Verdict{})
	m.server.fence.SetRemote(fencing.Verdict{Epoch: 6}, time.Minute)
	resp, _ = send(t, "DELETE", out, "", nil)
	if resp.StatusCode != 409 || resp.Header.Get(HeaderError) != "stale_epoch" {
		t.Fatalf("write under a stale epoch: %d %q", resp.StatusCode, resp.Header.Get(HeaderError))
	}
	if got := app.take(); len(got) != 0 {
		t.Fatalf("app saw %v, want nothing", got)
	}
	// Once the caller hears of epoch 6, its writes pass again.
	m.client.fence.SetRemote(fencing.Verdict{Epoch: 6}, time.Minute)
	if resp, _ := send(t, "DELETE", out, "", nil); resp.StatusCode != 200 {
		t.Fatalf("write under the current epoch: %d", resp.StatusCode)
	}
	if got := app.take(); len(got) != 1 || got[0] != "DELETE 6" {
		t.Fatalf("app saw %v", got)
	}

	// The receiver is in a fencing domain of its own whose epochs are
	// newer: the caller's epoch counts in another domain, so it is neither
	// refused as stale nor adopted.
	m.server.fenceDomain.Store(&fenceDomain{name: "service/" + m.server.service, service: true})
	m.server.fence.SetRemote(fencing.Verdict{Epoch: 9}, time.Minute)
	if resp, _ := send(t, "PUT", out, "x", nil); resp.StatusCode != 200 {
		t.Fatalf("write from another fencing domain: %d %q, want it admitted", resp.StatusCode, resp.Header.Get(HeaderError))
	}
	if got := app.take(); len(got) != 1 || got[0] != "PUT 6" {
		t.Fatalf("app saw %v, want [PUT 6]", got)
	}
	if e := m.server.fence.Epoch(); e != 9 {
		t.Fatalf("the receiver's epoch is %d after a write from another domain, want its own 9", e)
	}
}

func TestAppCannotForgeEpoch(t *testing.T) {
	app := &recordingApp{}
	m := startMesh(t, "orders", startApp(t, app), config.ProtocolHTTP1)
	out := "http://" + m.client.addr("outbound") + "/items"
	// The client knows no epoch; an app that sends one must not get it
	// through (it could jump the receiver's epoch forward).
	if resp, _ := send(t, "POST", out, "x", map[string]string{HeaderEpoch: "999"}); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := app.take(); len(got) != 1 || got[0] != "POST " {
		t.Fatalf("app saw %v, want the write without an epoch", got)
	}
	if e := m.server.fence.Epoch(); e != 0 {
		t.Fatalf("server adopted forged epoch %d", e)
	}
	// A malformed epoch from a peer is refused, not guessed at.
	resp, _ := send(t, "POST", "http://"+m.server.addr("inbound")+"/items", "x", map[string]string{HeaderEpoch: "12abc"})
	if resp.StatusCode != 400 {
		t.Fatalf("malformed epoch: %d", resp.StatusCode)
	}
}

func TestFencingAdmin(t *testing.T) {
	cfg := testConfig("orders", startApp(t, &recordingApp{}), config.ProtocolHTTP1)
	cfg.Fencing.Mode = config.FencingOn
	s := startSidecar(t, cfg)
	s.fence.SetLocal(fencing.Verdict{Fenced: true, Reason: "2 of 5 reachable", Quorum: fencing.NewQuorum(5, 2)})
	resp, body := send(t, "GET", "http://"+s.addr("admin")+"/fencing", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"fenced":true`) || !strings.Contains(body, `"needed":3`) {
		t.Fatalf("/fencing: %d %s", resp.StatusCode, body)
	}
}

func TestGossipVerdict(t *testing.T) {
	for _, tc := range []struct {
		alive, suspect, failed int
		fenced                 bool
	}{
		{1, 0, 0, false},
		{3, 0, 0, false},
		{3, 1, 0, false}, // 2 of 3 reachable
		{3, 2, 0, true},  // suspects count as unreachable
		{2, 0, 3, true},  // minority of a 5-member split
		{3, 0, 2, false}, // majority
		{2, 0, 2, true},  // even split: nobody writes
	} {
		v := (&Sidecar{}).gossipVerdict(&discovery.Snapshot{Alive: tc.alive, Suspect: tc.suspect, Failed: tc.failed})
		if v.Fenced != tc.fenced {
			t.Errorf("alive %d suspect %d failed %d: fenced %v (%s), want %v", tc.alive, tc.suspect, tc.failed, v.Fenced, v.Reason, tc.fenced)
		}
	}
}

func TestFencingOffByDefaultWithoutControlPlane(t *testing.T) {
	app := &recordingApp{}
	m := startMesh(t, "orders", startApp(t, app), config.ProtocolHTTP1)
	m.client.fence.SetLocal(fencing.Verdict{Fenced: true, Reason: "1 of 3"})
	if resp, _ := send(t, "POST", "http://"+m.client.addr("outbound")+"/items", "x", nil); resp.StatusCode != 200 {
		t.Fatalf("write with fencing mode auto and no control plane: %d, want it forwarded", resp.StatusCode)
	}
}

// A write refused by a fenced peer was never forwarded, so the caller's
// sidecar takes it to another endpoint (after a heal, some instances
// unfence a moment before others).
func TestWriteRefusedByFencedPeerGoesElsewhere(t *testing.T) {
	fencedApp, okApp := &recordingApp{}, &recordingApp{}
	fenced := startSidecar(t, testConfig("orders", startApp(t, fencedApp), config.ProtocolHTTP1))
	healthy := startSidecar(t, testConfig("orders", startApp(t, okApp), config.ProtocolHTTP1))
	fenced.fence.SetEnabled(true)
	fenced.fence.SetLocal(fencing.Verdict{Fenced: true, Reason: "1 of 3"})
	ccfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	ccfg.LoadBalancer = config.LBRoundRobin
	ccfg.Upstreams = map[string]config.Upstream{"orders": {Endpoints: []string{fenced.addr("inbound"), healthy.addr("inbound")}}}
	client := startSidecar(t, ccfg)
	for i := range 10 {
		if resp, _ := send(t, "POST", "http://"+client.addr("outbound")+"/items", "x", nil); resp.StatusCode != 200 {
			t.Fatalf("write %d: %d %s", i, resp.StatusCode, resp.Header.Get(HeaderError))
		}
	}
	if got := fencedApp.take(); len(got) != 0 {
		t.Fatalf("the fenced peer's app saw %v", got)
	}
	if got := okApp.take(); len(got) != 10 {
		t.Fatalf("the healthy peer's app saw %d writes, want 10", len(got))
	}
}

// MaxConnections bounds the mesh connections to a service's endpoints; a
// closed connection gives its slot back.
func TestConnectionSlots(t *testing.T) {
	cfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	one := 1
	cfg.Upstreams = map[string]config.Upstream{"orders": {
		Endpoints:  []string{"127.0.0.1:7001", "127.0.0.1:7002"},
		Resilience: &config.Resilience{Limits: &config.LimitsSpec{MaxConnections: &one}},
	}}
	s, err := New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	rel, _, err := s.connectionSlot("127.0.0.1:7001")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.connectionSlot("127.0.0.1:7002"); err == nil {
		t.Fatal("a second connection to the service was allowed with maxConnections 1")
	}
	rel()
	if rel2, _, err := s.connectionSlot("127.0.0.1:7002"); err != nil {
		t.Fatalf("after a release: %v", err)
	} else {
		rel2()
	}
	if rel3, _, err := s.connectionSlot("127.0.0.1:9999"); err != nil {
		t.Fatalf("an address no service lists: %v", err)
	} else {
		rel3()
	}
}

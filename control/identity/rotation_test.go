package identity

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// TestRotationDropsNothing runs two sidecars' managers with 3 s
// certificates and an HTTP/2 mesh hop between them, on a reused
// connection and on fresh connections, until both have rotated at least
// twice: no request may fail.
func TestRotationDropsNothing(t *testing.T) {
	cp := startControlPlane(t, 3*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	server := cp.manager(t, "billing", cp.token(t, "billing", true), Anchor{})
	client := cp.manager(t, "orders", cp.token(t, "orders", true), Anchor{})
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	for _, m := range []*Manager{server, client} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Run(runCtx) }()
	}
	defer func() { stop(); wg.Wait() }()
	for _, m := range []*Manager{server, client} {
		select {
		case <-m.Ready():
		case <-ctx.Done():
			t.Fatal("no first certificate")
		}
	}

	var mu sync.Mutex
	seenClientSerials := map[string]bool{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := PeerIdentity(*r.TLS)
			if err != nil || id != client.ID() || r.ProtoMajor != 2 {
				http.Error(w, "bad peer", http.StatusForbidden)
				return
			}
			mu.Lock()
			seenClientSerials[r.TLS.PeerCertificates[0].SerialNumber.String()] = true
			mu.Unlock()
			_, _ = io.WriteString(w, "ok")
		}),
		TLSConfig:         server.Credentials().ServerTLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.ServeTLS(ln, "", "") }()
	defer func() { _ = srv.Close(); <-served }()

	newClient := func(reuse bool) *http.Client {
		tr := &http.Transport{
			TLSClientConfig:   client.Credentials().ClientTLSConfig(spiffeid.Must(td, "", "billing")),
			ForceAttemptHTTP2: true,
			DisableKeepAlives: !reuse,
		}
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	reused, fresh := newClient(true), newClient(false)
	defer reused.CloseIdleConnections()
	url := "https://" + ln.Addr().String() + "/"

	serverSerials := map[string]bool{}
	clientSerials := map[string]bool{}
	var requests int
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(serverSerials) < 3 || len(clientSerials) < 3 {
		select {
		case <-ctx.Done():
			t.Fatalf("rotations not seen in time: server %d, client %d certificates", len(serverSerials), len(clientSerials))
		case <-tick.C:
		}
		serverSerials[server.Credentials().Certificate().Leaf.SerialNumber.String()] = true
		clientSerials[client.Credentials().Certificate().Leaf.SerialNumber.String()] = true
		for name, c := range map[string]*http.Client{"reused": reused, "fresh": fresh} {
			resp, err := c.Get(url)
			if err != nil {
				t.Fatalf("%s connection, request %d: %v", name, requests, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Fatalf("%s connection, request %d: %d %q", name, requests, resp.StatusCode, body)
			}
			requests++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seenClientSerials) < 2 {
		t.Fatalf("the server saw %d client certificates across %d requests, want the rotated ones too", len(seenClientSerials), requests)
	}
	t.Logf("%d requests, 0 failures; server rotated to %d certificates, client to %d", requests, len(serverSerials), len(clientSerials))
}

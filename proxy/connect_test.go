package proxy

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// blackhole returns a loopback address where a connect neither succeeds
// nor fails: a listener with a backlog of 0 that never accepts, its queue
// filled, so the kernel drops further SYNs (as a peer cut off by a
// partition does).
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 8 { // fill the accept queue until a connect hangs
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Skip("the kernel kept accepting connections into a full backlog: no blackhole on loopback here")
	return ""
}

// TestConnectTimeoutBoundsTheMeshDial: the target service's connect
// timeout (policy timeouts.connect) bounds dialing a peer that does not
// answer, so a request fails over (or fails) in that time rather than
// the listener-wide dial limit (5 s).
func TestConnectTimeoutBoundsTheMeshDial(t *testing.T) {
	hole := blackhole(t)
	const connect = 300 * time.Millisecond
	client := startSidecar(t, resClientConfig(map[string]config.Upstream{
		"hole": {Endpoints: []string{hole}, Resilience: &config.Resilience{
			Timeouts: &config.TimeoutsSpec{Connect: resDur(connect)}}},
	}))
	ctx := testContext(t, 20*time.Second)
	start := time.Now()
	res := resDo(ctx, h1Client(), "GET", "http://"+client.addr("outbound")+"/", "hole", "", "")
	elapsed := time.Since(start)
	if res.status != 503 || res.meshErr != "upstream_connect_failure" {
		t.Errorf("got %d %q, %v; want 503 upstream_connect_failure", res.status, res.meshErr, res.err)
	}
	// Every try (first and retries) waits out the connect timeout; at
	// the 5 s dial limit even one try would pass the bound.
	if elapsed < connect || elapsed > 4*time.Second {
		t.Errorf("answered after %v; want the %v connect timeout per try, well under the 5 s dial limit", elapsed, connect)
	}
	t.Logf("answered after %v with a %v connect timeout", elapsed.Round(time.Millisecond), connect)
}

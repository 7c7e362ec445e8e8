package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpRelay forwards every TCP connection made to its own 127.0.0.1 port
// to a target address, and can be cut like a broken link: Cut closes the
// connections in flight and refuses new ones (accepted, then closed at
// once, so a client fails fast instead of waiting for a timeout) until
// Restore. The port stays bound throughout, so a client keeps dialling
// the same address across cuts.
//
// Tests put one in front of a server to take it away from one client (a
// sidecar's control plane) without touching the others.
type tcpRelay struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	closed bool
	conns  map[net.Conn]struct{} // both ends of every open pair
	wg     sync.WaitGroup        // the accept loop and every pipe
}

// startRelay relays 127.0.0.1:0 to target until the test ends.
func startRelay(t testing.TB, target string) *tcpRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay listener: %v", err)
	}
	r := &tcpRelay{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.acceptLoop()
	t.Cleanup(r.Close)
	return r
}

// Addr is the address clients dial.
func (r *tcpRelay) Addr() string { return r.ln.Addr().String() }

// Cut closes every relayed connection and refuses new ones until Restore.
func (r *tcpRelay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = true
	r.closeAllLocked()
}

// Restore relays new connections again.
func (r *tcpRelay) Restore() {
	r.mu.Lock()
	r.cut = false
	r.mu.Unlock()
}

// Close stops the relay: the listener and every connection are closed and
// Close waits for the relay's goroutines. Idempotent.
func (r *tcpRelay) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		_ = r.ln.Close()
		r.closeAllLocked()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *tcpRelay) closeAllLocked() {
	for c := range r.conns {
		_ = c.Close()
	}
	clear(r.conns)
}

func (r *tcpRelay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient accept error: keep serving
		}
		r.mu.Lock()
		refuse := r.cut || r.closed
		if !refuse {
			r.wg.Add(1)
		}
		r.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		go r.relay(c)
	}
}

// relay connects c to the target and copies both ways until either side
// ends or the relay is cut; then both connections are closed.
func (r *tcpRelay) relay(c net.Conn) {
	defer r.wg.Done()
	up, err := net.DialTimeout("tcp", r.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	r.mu.Lock()
	if r.cut || r.closed {
		r.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	r.conns[c], r.conns[up] = struct{}{}, struct{}{}
	r.mu.Unlock()

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	// One direction ended: end the pair (the other copy returns once its
	// connections are closed).
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, up)
	r.mu.Unlock()
	_ = c.Close()
	_ = up.Close()
	<-done
}

// TestTCPRelayCutAndRestore: a cut ends the connections in flight and
// refuses new ones at once; after Restore the relay carries traffic again.
func TestTCPRelayCutAndRestore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var echoes sync.WaitGroup
	t.Cleanup(func() { ln.Close(); echoes.Wait() })
	echoes.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			echoes.Go(func() { defer c.Close(); _, _ = io.Copy(c, c) })
		}
	})
	r := startRelay(t, ln.Addr().String())

	roundTrip := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping" {
			return fmt.Errorf("echoed %q, want ping", buf)
		}
		return nil
	}
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
		if err != nil {
			t.Fatalf("dial relay: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	live := dial()
	if err := roundTrip(live); err != nil {
		t.Fatalf("through the relay: %v", err)
	}
	r.Cut()
	if err := roundTrip(live); err == nil {
		t.Fatal("a connection in flight still carries traffic after the cut")
	}
	if err := roundTrip(dial()); err == nil {
		t.Fatal("a new connection carries traffic while the relay is cut")
	}
	r.Restore()
	if err := roundTrip(dial()); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
}

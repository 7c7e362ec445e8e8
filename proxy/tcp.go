package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
)

// tcpProxy splices accepted connections to a target chosen per connection.
// Bytes pass through untouched in both directions; a half-close on one
// side is passed on to the other. Goroutines: one accept loop, and two
// per proxied connection (one per direction).
type tcpProxy struct {
	direction string
	ln        net.Listener
	target    func() (string, error) // where the next connection goes
	dial      *dialer
	m         *metrics
	log       *slog.Logger

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (p *tcpProxy) serve() error {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if !p.track(c) {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.handle(c)
		}()
	}
}

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *tcpProxy) handle(down net.Conn) {
	defer down.Close()
	addr, err := p.target()
	if err != nil {
		p.m.errors.WithLabelValues(p.direction+"_tcp", "no_healthy_upstream").Inc()
		p.log.Debug("tcp: no target", "error", err)
		return
	}
	up, err := p.dial.dial(context.Background(), "tcp", addr)
	if err != nil {
		p.m.errors.WithLabelValues(p.direction+"_tcp", "upstream_connect_failure").Inc()
		p.log.Debug("tcp: dial failed", "target", addr, "error", err)
		return
	}
	defer up.Close()
	g := p.m.tcpActive.WithLabelValues(p.direction)
	g.Inc()
	defer g.Dec()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(up, down) }()
	go func() { defer wg.Done(); pipe(down, up) }()
	wg.Wait()
}

// pipe copies src to dst, then half-closes dst's write side so the peer
// sees EOF while the other direction may still flow.
func pipe(dst, src net.Conn) {
	buf := bufferPool{}.Get()
	defer bufferPool{}.Put(buf)
	_, _ = io.CopyBuffer(dst, src, buf)
	if cw, ok := unwrapConn(dst).(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		dst.Close()
	}
}

func unwrapConn(c net.Conn) net.Conn {
	if cc, ok := c.(*countedConn); ok {
		return cc.Conn
	}
	return c
}

// shutdown stops accepting and waits for open connections until ctx ends,
// then closes them.
func (p *tcpProxy) shutdown(ctx context.Context) error {
	p.ln.Close()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	return err
}

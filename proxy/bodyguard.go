package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// Slow bodies, slow readers and body caps (HARDENING.md B6, B8).
//
// Every request passes one bodyGuard, installed just above forwarding in
// both directions (stack.go). It wraps the request body and the response
// writer and enforces the sidecar's limits (config.Limits):
//
//   - body idle: a read of the request body that waits for the client
//     bodyIdleTimeout (default 30 s) without receiving a byte;
//   - minimum rate: a request body that, over a window of
//     minBodyRateWindow (default 10 s) spent waiting for it, arrives at
//     less than minBodyRate (default 1 KiB/s) on average; the first window
//     is the grace; gRPC bodies are exempt;
//   - slow reader: one write (or flush) of the response that the client
//     does not let finish within bodyIdleTimeout;
//   - size: maxRequestBodyBytes (outbound: the target service's cap, if
//     the file sets one); 0, the default, means none.
//
// A tripped request body fails the read in progress at once (the
// request's read deadline is set in the past through
// http.ResponseController) and every later read with ErrBodyTimeout or
// ErrBodyTooLarge. The transport then aborts the upstream request before
// the body's end, so the upstream never sees a complete request, and the
// error handler answers 408 or 413 (gRPC: DEADLINE_EXCEEDED or
// RESOURCE_EXHAUSTED) if no response has started: with Connection: close
// on HTTP/1, while on HTTP/2 the server resets the stream the client is
// still sending on. A declared Content-Length over the cap is answered 413
// before anything is forwarded. A tripped writer gets a write deadline in
// the past: the blocked write fails, the forwarder abandons the response
// (the HTTP/1 connection is closed, the HTTP/2 stream reset) and closes
// the upstream response, which cancels the upstream request.
//
// Only time spent waiting for the client counts. A body the upstream is
// slow to take (back-pressure) or a response it is slow to produce is not
// the client's doing; the resilience timeouts cover those. For gRPC the
// request side stops at the response's start: a streaming call the
// server has accepted may go quiet.
//
// Cost per request: one allocation (the guard holds both wrappers) and no
// timer. A watchdog goroutine per direction, running only while requests
// are in flight, keeps a coarse clock and inspects the guards in flight
// every tick (an eighth of the shortest limit, between 5 ms and 1 s) on
// sharded intrusive lists; reads and writes only copy the coarse clock
// and count bytes, in atomics (reading the system clock cost more than
// the rest of the guard on this VM class). A trip comes no earlier than
// its limit and at most two ticks later.

// bodyWatch is the watchdog of one direction's guards.
type bodyWatch struct {
	direction string
	idle      int64 // ns a read or write may wait for the client
	minRate   int64 // bytes per second; 0: no rate check
	window    int64 // ns of waiting the rate is averaged over
	tick      time.Duration
	m         *metrics

	// now is the coarse clock (monoNow as of the last tick, or as of the
	// watchdog's start): what reads and writes stamp themselves with.
	now atomic.Int64

	shards  [watchShards]watchShard
	next    atomic.Uint32 // spreads guards over the shards
	active  atomic.Int64  // guards registered
	running atomic.Bool   // the watchdog goroutine is running
}

// watchShards spreads registration over locks so that concurrent requests
// rarely meet on one.
const watchShards = 16

type watchShard struct {
	mu   sync.Mutex
	head *bodyGuard
	_    [48]byte // one shard per cache line
}

func newBodyWatch(direction string, lim config.Limits, m *metrics) *bodyWatch {
	w := &bodyWatch{
		direction: direction,
		idle:      int64(lim.BodyIdleTimeout.Duration),
		minRate:   lim.MinBodyRate,
		window:    int64(lim.MinBodyRateWindow.Duration),
		m:         m,
	}
	shortest := lim.BodyIdleTimeout.Duration
	if w.minRate > 0 && lim.MinBodyRateWindow.Duration < shortest {
		shortest = lim.MinBodyRateWindow.Duration
	}
	w.tick = min(max(shortest/8, 5*time.Millisecond), time.Second)
	return w
}

// bodyGuard is the state of one request: the body and writer wrappers
// (fields, so that one allocation holds everything), counters the
// request's goroutines update, and what the watchdog keeps.
type bodyGuard struct {
	wr    guardedWriter
	rd    guardedBody // rd.ReadCloser is nil for a request without a body
	watch *bodyWatch
	limit int64 // body cap in bytes; 0: none
	grpc  bool

	read         atomic.Int64 // request-body bytes delivered
	waited       atomic.Int64 // ns spent inside reads of the request body
	readingSince atomic.Int64 // coarse clock when the read in flight began; 0: none
	writingSince atomic.Int64 // coarse clock when the write in flight began; 0: none
	started      atomic.Bool  // a final response status went out
	cause        atomic.Pointer[Error]

	mu   sync.Mutex // orders a trip before the handler's return
	done bool       // the handler returned (under mu): the writer is gone

	// The watchdog's: list links (under the shard's lock) and the start
	// of the current rate window (watchdog goroutine only).
	shard              *watchShard
	prev, next         *bodyGuard
	winWaited, winRead int64
}

// guardBodies installs a bodyGuard on every request but upgrades (a
// tunnel is not a body). direction is "inbound" or "outbound"; outbound,
// the cap is the target service's (route has set exchange.dst).
func (s *Sidecar) guardBodies(ew *errorWriter, direction string, next http.Handler) http.Handler {
	w := newBodyWatch(direction, s.cfg.Load().Limits, s.m)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && r.Header["Upgrade"] != nil && isUpgrade(r) {
			next.ServeHTTP(rw, r)
			return
		}
		cfg := s.cfg.Load()
		limit := cfg.Limits.MaxRequestBodyBytes
		if direction == "outbound" {
			if ex := exchangeFrom(r.Context()); ex != nil {
				limit = cfg.MaxRequestBodyFor(ex.dst)
			}
		}
		if limit > 0 && r.ContentLength > limit {
			w.count(reasonTooLarge)
			ew.write(rw, r, ErrBodyTooLarge.with(fmt.Errorf("declared Content-Length %d is over the cap of %d bytes", r.ContentLength, limit)))
			return
		}
		g := &bodyGuard{watch: w, limit: limit, grpc: isGRPC(r)}
		g.wr = guardedWriter{ResponseWriter: rw, g: g}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			g.rd = guardedBody{ReadCloser: r.Body, g: g}
			r.Body = &g.rd
		}
		if ex := exchangeFrom(r.Context()); ex != nil {
			ex.guard = g
		}
		w.add(g)
		defer w.remove(g) // also when the forwarder aborts the handler with a panic
		next.ServeHTTP(&g.wr, r)
	})
}

// Reasons a request is cut off (the mesh_body_aborts_total label).
const (
	reasonIdle       = "body_idle"
	reasonSlow       = "body_slow"
	reasonTooLarge   = "body_too_large"
	reasonSlowReader = "slow_reader"
)

// trip is what the watchdog does to a request.
type trip struct {
	reason string
	err    *Error
	write  bool // the response side: a write deadline, not a read deadline
}

var (
	errBodyIdle   = errors.New("no byte of the request body arrived within limits.bodyIdleTimeout")
	errBodySlow   = errors.New("the request body arrived below limits.minBodyRate")
	errSlowReader = errors.New("the client did not read the response within limits.bodyIdleTimeout")

	tripIdle   = &trip{reason: reasonIdle, err: ErrBodyTimeout.with(errBodyIdle)}
	tripSlow   = &trip{reason: reasonSlow, err: ErrBodyTimeout.with(errBodySlow)}
	tripReader = &trip{reason: reasonSlowReader, err: ErrBodyTimeout.with(errSlowReader), write: true}

	// aLongTimeAgo is a deadline in the past: it fails the blocked call.
	aLongTimeAgo = time.Unix(1, 0)
)

func (w *bodyWatch) count(reason string) {
	w.m.bodyAborts.WithLabelValues(w.direction, reason).Inc()
}

// monoEpoch anchors monoNow: monotonic nanoseconds, never 0.
var monoEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(monoEpoch)) + 1 }

// guardedBody is the request body the transport reads.
type guardedBody struct {
	io.ReadCloser
	g *bodyGuard
}

// Read passes at most one byte beyond the cap, so that crossing it is
// seen without handing the transport more than the cap.
func (b *guardedBody) Read(p []byte) (int, error) {
	g := b.g
	if e := g.cause.Load(); e != nil {
		return 0, e
	}
	if g.limit > 0 {
		if room := g.limit - g.read.Load() + 1; int64(len(p)) > room {
			p = p[:room]
		}
	}
	clock := &g.watch.now
	start := clock.Load()
	g.readingSince.Store(start)
	n, err := b.ReadCloser.Read(p)
	g.readingSince.Store(0)
	g.waited.Add(clock.Load() - start) // in ticks, unbiased over many reads
	total := g.read.Add(int64(n))
	if g.limit > 0 && total > g.limit {
		e := ErrBodyTooLarge.with(fmt.Errorf("the request body crossed the cap of %d bytes", g.limit))
		if g.cause.CompareAndSwap(nil, e) {
			g.watch.count(reasonTooLarge)
		}
		return n - int(total-g.limit), g.cause.Load()
	}
	if e := g.cause.Load(); e != nil { // tripped while this read waited
		return n, e
	}
	return n, err
}

// guardedWriter is the response writer the layers below write to.
type guardedWriter struct {
	http.ResponseWriter
	g *bodyGuard
}

func (w *guardedWriter) WriteHeader(code int) {
	if code >= 200 {
		w.g.started.Store(true)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *guardedWriter) Write(p []byte) (int, error) {
	g := w.g
	g.started.Store(true)
	g.writingSince.Store(g.watch.now.Load())
	n, err := w.ResponseWriter.Write(p)
	g.writingSince.Store(0)
	return n, err
}

// Flush may block like a write (it sends what is buffered).
func (w *guardedWriter) Flush() {
	g := w.g
	g.started.Store(true)
	g.writingSince.Store(g.watch.now.Load())
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	g.writingSince.Store(0)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *guardedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// add registers g and starts the watchdog if it is not running.
func (w *bodyWatch) add(g *bodyGuard) {
	sh := &w.shards[w.next.Add(1)%watchShards]
	g.shard = sh
	sh.mu.Lock()
	g.next = sh.head
	if sh.head != nil {
		sh.head.prev = g
	}
	sh.head = g
	sh.mu.Unlock()
	w.active.Add(1)
	if !w.running.Load() && w.running.CompareAndSwap(false, true) {
		w.now.Store(monoNow())
		go w.loop()
	}
}

// remove unregisters g when its handler returns; a trip in progress
// finishes first, and none starts after.
func (w *bodyWatch) remove(g *bodyGuard) {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
	sh := g.shard
	sh.mu.Lock()
	if g.prev != nil {
		g.prev.next = g.next
	} else {
		sh.head = g.next
	}
	if g.next != nil {
		g.next.prev = g.prev
	}
	g.prev, g.next = nil, nil
	sh.mu.Unlock()
	w.active.Add(-1)
}

// loop inspects the guards every tick; it ends after three ticks without
// any, and add starts it again.
func (w *bodyWatch) loop() {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	type pending struct {
		g *bodyGuard
		t *trip
	}
	var trips []pending
	quiet := 0
	for range t.C {
		now := monoNow()
		w.now.Store(now)
		if w.active.Load() == 0 {
			if quiet++; quiet < 3 {
				continue
			}
			w.running.Store(false)
			// A guard added since the check saw the loop still running and
			// did not start another: keep going for it.
			if w.active.Load() == 0 || !w.running.CompareAndSwap(false, true) {
				return
			}
		}
		quiet = 0
		for i := range w.shards {
			sh := &w.shards[i]
			sh.mu.Lock()
			for g := sh.head; g != nil; g = g.next {
				if tr := w.check(g, now); tr != nil {
					trips = append(trips, pending{g, tr})
				}
			}
			sh.mu.Unlock()
		}
		// Unblocking may wait for an HTTP/2 connection's serve loop: never
		// on the watchdog's goroutine.
		for i, p := range trips {
			go p.g.abort(p.t)
			trips[i] = pending{}
		}
		trips = trips[:0]
	}
}

// check decides whether g is to be cut off now. Called with g's shard
// locked, by the watchdog only. A stamp of the coarse clock is up to a
// tick older than the event, hence idle + tick: never early.
func (w *bodyWatch) check(g *bodyGuard, now int64) *trip {
	if g.cause.Load() != nil {
		return nil
	}
	limit := w.idle + int64(w.tick)
	if ws := g.writingSince.Load(); ws != 0 && now-ws >= limit {
		return tripReader
	}
	if g.rd.ReadCloser == nil {
		return nil
	}
	rs := g.readingSince.Load()
	// A gRPC call the server has started answering may go quiet.
	quietOK := g.grpc && g.started.Load()
	if rs != 0 && now-rs >= limit && !quietOK {
		return tripIdle
	}
	if w.minRate == 0 || g.grpc {
		return nil
	}
	waited := g.waited.Load()
	if rs != 0 {
		waited += now - rs
	}
	if span := waited - g.winWaited; span >= w.window {
		read := g.read.Load()
		// read/span below minRate, in bytes·ms to stay within int64.
		if (read-g.winRead)*1000 < w.minRate*(span/int64(time.Millisecond)) {
			return tripSlow
		}
		g.winWaited, g.winRead = waited, read
	}
	return nil
}

// abort cuts the request off, unless its handler has returned (its
// writer may then serve another request) or it was cut off already.
func (g *bodyGuard) abort(t *trip) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done || !g.cause.CompareAndSwap(nil, t.err) {
		return
	}
	g.watch.count(t.reason)
	rc := http.NewResponseController(g.wr.ResponseWriter)
	if t.write {
		_ = rc.SetWriteDeadline(aLongTimeAgo)
	} else {
		_ = rc.SetReadDeadline(aLongTimeAgo)
	}
}

package proxy

// The hardening suite, HTTP/2 part (HARDENING.md §5B B1–B4, issue 9):
// abusive HTTP/2 connections against the inbound listener while a
// well-behaved client keeps calling through the same listener.
//
// Targets, per attack:
//   - every abusive connection is closed (GOAWAY, EOF or reset) within 1 s
//     of the attack's onset; for header bombs whose streams Go answers 431
//     and whose connection stays usable, every abusive stream is refused
//     within 1 s instead (HARDENING.md B3: "GOAWAY or 431");
//   - nothing of an abusive stream reaches the app beyond the bound in the
//     case (rapid reset: ≤2,000 upstream requests, B1);
//   - the well-behaved client: 100 % success, p99 < 250 ms;
//   - memory: the peak Go heap in use (runtime.MemStats.HeapInuse) of the
//     whole test process — sidecar, app, attackers and client together, so
//     an upper bound for the sidecar — stays under 128 MiB (64 MiB for the
//     header bombs, B3). The process RSS (/proc/self/statm) is logged too
//     but not asserted: under -race it is dominated by shadow memory.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// hardIDHeader carries the well-behaved client's request id, so the app can
// tell its requests from whatever an attack made it receive.
const hardIDHeader = "X-Hard-Id"

// hardApp is a recording upstream: it counts requests by hardIDHeader;
// requests without one (an attack that got through) are counted apart.
type hardApp struct {
	mu    sync.Mutex
	byID  map[string]int
	other atomic.Int64
}

func newHardApp() *hardApp { return &hardApp{byID: map[string]int{}} }

func (a *hardApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	id := r.Header.Get(hardIDHeader)
	if id == "" {
		a.other.Add(1)
		w.WriteHeader(http.StatusOK)
		return
	}
	a.mu.Lock()
	a.byID[id]++
	a.mu.Unlock()
	_, _ = io.WriteString(w, "ok "+id)
}

// seen returns how many times the app received id.
func (a *hardApp) seen(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byID[id]
}

// hardProbeResult is what a well-behaved client experienced.
type hardProbeResult struct {
	sent, ok  int
	failures  []string // the first few, for the report
	latencies []time.Duration
}

func (r hardProbeResult) successRate() float64 {
	if r.sent == 0 {
		return 0
	}
	return float64(r.ok) / float64(r.sent)
}

// p99 is the 99th percentile latency (nearest rank).
func (r hardProbeResult) p99() time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	l := slices.Clone(r.latencies)
	slices.Sort(l)
	return l[int(math.Ceil(0.99*float64(len(l))))-1]
}

func (r hardProbeResult) String() string {
	return fmt.Sprintf("%d/%d ok (%.1f %%), p99 %v", r.ok, r.sent, 100*r.successRate(), r.p99().Round(time.Millisecond))
}

// hardProbe is a well-behaved client calling url (Host host) at rate
// requests per second until stop is called. A request succeeds when it is
// answered 200 with the app's body and the app saw its id exactly once.
type hardProbe struct {
	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	res      hardProbeResult
}

func startHardProbe(t testing.TB, c *http.Client, app *hardApp, url, host string, rate int) *hardProbe {
	t.Helper()
	p := &hardProbe{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-p.stopc:
				wg.Wait()
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("probe-%d", n)
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.record(p.call(c, app, url, host, id))
			}()
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

type hardCall struct {
	lat time.Duration
	err error
}

func (p *hardProbe) call(c *http.Client, app *hardApp, url, host, id string) hardCall {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return hardCall{err: err}
	}
	req.Host = host
	req.Header.Set(hardIDHeader, id)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return hardCall{err: err}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(start)
	switch {
	case err != nil:
		return hardCall{lat: lat, err: fmt.Errorf("%s: reading the body: %w", id, err)}
	case resp.StatusCode != http.StatusOK || string(body) != "ok "+id:
		return hardCall{lat: lat, err: fmt.Errorf("%s: got %d %q (%s=%q)", id, resp.StatusCode, body, HeaderError, resp.Header.Get(HeaderError))}
	case app.seen(id) != 1:
		return hardCall{lat: lat, err: fmt.Errorf("%s: the app saw it %d times, want 1", id, app.seen(id))}
	}
	return hardCall{lat: lat}
}

func (p *hardProbe) record(c hardCall) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.sent++
	if c.err != nil {
		if len(p.res.failures) < 5 {
			p.res.failures = append(p.res.failures, c.err.Error())
		}
		return
	}
	p.res.ok++
	p.res.latencies = append(p.res.latencies, c.lat)
}

// sentSoFar is how many requests have completed so far.
func (p *hardProbe) sentSoFar() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res.sent
}

// stop ends the probe, waits for its requests, and returns the result.
func (p *hardProbe) stop() hardProbeResult {
	p.stopOnce.Do(func() { close(p.stopc) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res
}

// check applies the well-behaved client's targets: 100 % success, p99
// under 250 ms, and at least minSent requests made.
func (r hardProbeResult) check(t testing.TB, minSent int) {
	t.Helper()
	if r.sent < minSent {
		t.Errorf("well-behaved client made %d requests, want at least %d", r.sent, minSent)
	}
	if r.ok != r.sent {
		t.Errorf("well-behaved client: %s, want 100 %% success; first failures: %s", r, strings.Join(r.failures, "; "))
	}
	if p := r.p99(); p >= raceSlowdown*250*time.Millisecond {
		t.Errorf("well-behaved client p99 = %v, want < %v (%s)", p, raceSlowdown*250*time.Millisecond, r)
	}
}

// hardMemory samples the process's Go heap in use until stopped.
type hardMemory struct {
	base     uint64
	peak     atomic.Uint64
	peakRSS  atomic.Uint64
	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
}

func startHardMemory(t testing.TB) *hardMemory {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := &hardMemory{base: ms.HeapInuse, stopc: make(chan struct{}), done: make(chan struct{})}
	m.peak.Store(ms.HeapInuse)
	go func() {
		defer close(m.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > m.peak.Load() {
				m.peak.Store(ms.HeapInuse)
			}
			if rss := hardRSS(); rss > m.peakRSS.Load() {
				m.peakRSS.Store(rss)
			}
			select {
			case <-m.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *hardMemory) stop() {
	m.stopOnce.Do(func() { close(m.stopc) })
	<-m.done
}

func (m *hardMemory) String() string {
	return fmt.Sprintf("heap in use: base %.1f MiB, peak %.1f MiB; peak RSS %.1f MiB",
		mib(m.base), mib(m.peak.Load()), mib(m.peakRSS.Load()))
}

// check stops sampling and asserts the peak heap in use is under limit.
func (m *hardMemory) check(t testing.TB, limit uint64) {
	t.Helper()
	m.stop()
	if p := m.peak.Load(); p >= limit {
		t.Errorf("peak Go heap in use %.1f MiB, want < %.0f MiB (%s)", mib(p), mib(limit), m)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// hardRSS is the process's resident set size from /proc/self/statm, or 0
// where that file does not exist.
func hardRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// hardH2Conn is a raw HTTP/2 client connection for crafting abusive
// frames. One goroutine writes (the attack); when reading is on, another
// reads the server's frames and records how the connection ended.
type hardH2Conn struct {
	c     net.Conn
	fr    *http2.Framer
	start time.Time // the attack's onset: after the preface and SETTINGS

	endOnce sync.Once
	ended   chan struct{} // closed when the server ended the connection
	endAt   time.Duration // since start
	endHow  string

	frames      atomic.Int64 // abusive frames written
	refused     atomic.Int64 // streams answered 431 or RST_STREAM
	lastRefusal atomic.Int64 // since start, in nanoseconds
}

// dialHardH2 opens a cleartext HTTP/2 connection to addr and sends the
// preface and an empty SETTINGS frame. With read off the client never reads,
// as a flood attacker does, and its receive buffer is kept small.
func dialHardH2(t testing.TB, addr string, read bool) *hardH2Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if !read {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(hardAttackWindow + 10*time.Second)) // bounds every attack
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatalf("writing the preface: %v", err)
	}
	h := &hardH2Conn{c: c, fr: http2.NewFramer(c, c), ended: make(chan struct{})}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatalf("writing SETTINGS: %v", err)
	}
	h.start = time.Now()
	if read {
		go h.readLoop()
	}
	return h
}

// end records how and when the connection ended (first call wins).
func (h *hardH2Conn) end(how string) {
	h.endOnce.Do(func() {
		h.endAt = time.Since(h.start)
		h.endHow = how
		close(h.ended)
	})
}

// hardAttackWindow bounds how long one attack connection keeps attacking.
const hardAttackWindow = 10 * time.Second

// attacking reports whether the attack on h should go on: the server has
// not ended the connection and the window has not passed.
func (h *hardH2Conn) attacking() bool {
	return !h.isEnded() && time.Since(h.start) < hardAttackWindow
}

// wrote counts one abusive frame, or records the end of the connection when
// the write failed; it reports whether the write succeeded.
func (h *hardH2Conn) wrote(err error) bool {
	if err != nil {
		h.end("write: " + err.Error())
		return false
	}
	h.frames.Add(1)
	return true
}

func (h *hardH2Conn) isEnded() bool {
	select {
	case <-h.ended:
		return true
	default:
		return false
	}
}

func (h *hardH2Conn) readLoop() {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.end("read: " + err.Error())
			return
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			h.end("GOAWAY " + f.ErrCode.String())
		case *http2.RSTStreamFrame:
			h.refusal()
		case *http2.MetaHeadersFrame:
			if f.PseudoValue("status") == "431" {
				h.refusal()
			}
		}
	}
}

func (h *hardH2Conn) refusal() {
	h.refused.Add(1)
	h.lastRefusal.Store(int64(time.Since(h.start)))
}

// hardRequestBlock encodes a GET's pseudo-headers (plus extra fields) with
// enc.
func hardRequestBlock(enc *hpack.Encoder, buf *bytes.Buffer, path string, extra ...hpack.HeaderField) []byte {
	buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "echo"}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for _, f := range extra {
		_ = enc.WriteField(f)
	}
	return bytes.Clone(buf.Bytes())
}

// hardAttack is one HTTP/2 abuse: run writes abusive frames on c until a
// write fails, c ends, or the window passes.
type hardAttack struct {
	name string
	// conns attack in parallel.
	conns int
	// read: the attacker reads the server's frames (else it never reads).
	read bool
	// streams, when positive, is how many abusive streams each connection
	// sends; a connection that stays open must have refused them all.
	streams int
	// heapLimit bounds the process's peak Go heap in use.
	heapLimit uint64
	// appLimit bounds the requests without a probe id the app may receive.
	appLimit int64
	run      func(c *hardH2Conn, streams int)
}

// rapidReset opens streams and cancels each at once (CVE-2023-44487).
func rapidReset(c *hardH2Conn, _ int) {
	var buf bytes.Buffer
	block := hardRequestBlock(hpack.NewEncoder(&buf), &buf, "/rapid-reset")
	for id := uint32(1); c.attacking() && id < 1<<30; id += 2 {
		if !c.wrote(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true})) ||
			!c.wrote(c.fr.WriteRSTStream(id, http2.ErrCodeCancel)) {
			return
		}
	}
}

// continuationFlood sends one HEADERS frame without END_HEADERS, then
// CONTINUATION frames of header fields that never end (CVE-2023-45288).
func continuationFlood(c *hardH2Conn, _ int) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	block := hardRequestBlock(enc, &buf, "/continuation")
	if !c.wrote(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true})) {
		return
	}
	buf.Reset()
	for buf.Len() < 15<<10 {
		_ = enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("c", 1000), Sensitive: true})
	}
	frag := bytes.Clone(buf.Bytes())
	for c.attacking() && c.wrote(c.fr.WriteContinuation(1, false, frag)) {
	}
}

// hardMaxFrame is the largest frame the sidecar accepts
// (MaxReadFrameSize, 16 KiB).
const hardMaxFrame = 16 << 10

// hpackBomb puts one 4 KiB field in the HPACK dynamic table, then sends
// streams whose header block is thousands of one-byte references to it:
// 16 KiB on the wire would decode to ~60 MiB per stream.
func hpackBomb(c *hardH2Conn, streams int) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i < streams && c.attacking(); i++ {
		var block []byte
		if i == 0 {
			// The first block adds the entry (literal with incremental
			// indexing); it is the newest dynamic entry, index 62.
			block = hardRequestBlock(enc, &buf, "/hpack-bomb", hpack.HeaderField{Name: "x-bomb", Value: strings.Repeat("b", 4000)})
		} else {
			// Later blocks add nothing to the table (never-indexed
			// literals), so the bomb entry stays at 62.
			buf.Reset()
			for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "echo"}, {":path", "/hpack-bomb"}} {
				_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
			}
			block = bytes.Clone(buf.Bytes())
		}
		// Fill the frame with indexed-field references to entry 62.
		block = append(block, bytes.Repeat([]byte{0x80 | 62}, hardMaxFrame-len(block))...)
		if !c.wrote(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block, EndStream: true, EndHeaders: true})) {
			return
		}
	}
}

// tinyHeaders sends streams of 30,000 two-byte header fields each (split
// in CONTINUATION frames), 120 KiB on the wire per stream.
func tinyHeaders(c *hardH2Conn, streams int) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i < streams && c.attacking(); i++ {
		buf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "echo"}, {":path", "/tiny"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
		}
		for j := 0; j < 30000; j++ {
			_ = enc.WriteField(hpack.HeaderField{Name: "a", Value: "b", Sensitive: true})
		}
		block := buf.Bytes()
		id := uint32(2*i + 1)
		first := block[:min(hardMaxFrame, len(block))]
		if !c.wrote(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true, EndHeaders: len(block) <= hardMaxFrame})) {
			return
		}
		for off := hardMaxFrame; off < len(block); off += hardMaxFrame {
			end := min(off+hardMaxFrame, len(block))
			if !c.wrote(c.fr.WriteContinuation(id, end == len(block), block[off:end])) {
				return
			}
		}
	}
}

// settingsFlood sends SETTINGS frames and never reads their ACKs
// (CVE-2019-9515).
func settingsFlood(c *hardH2Conn, _ int) {
	for c.attacking() && c.wrote(c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})) {
	}
}

// pingFlood sends PINGs and never reads the replies (CVE-2019-9512).
func pingFlood(c *hardH2Conn, _ int) {
	var data [8]byte
	for c.attacking() && c.wrote(c.fr.WritePing(false, data)) {
	}
}

// emptyDataFlood opens one stream whose body never ends and sends DATA
// frames with no payload and no END_STREAM on it (CVE-2019-9518).
func emptyDataFlood(c *hardH2Conn, _ int) {
	var buf bytes.Buffer
	block := hardRequestBlock(hpack.NewEncoder(&buf), &buf, "/empty-data")
	if !c.wrote(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})) {
		return
	}
	for c.attacking() && c.wrote(c.fr.WriteData(1, false, nil)) {
	}
}

// emptyContinuationFlood sends a HEADERS frame without END_HEADERS, then
// CONTINUATION frames with no payload: the header block never grows, so
// the header-size bound never trips.
func emptyContinuationFlood(c *hardH2Conn, _ int) {
	var buf bytes.Buffer
	block := hardRequestBlock(hpack.NewEncoder(&buf), &buf, "/empty-continuation")
	if !c.wrote(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true})) {
		return
	}
	for c.attacking() && c.wrote(c.fr.WriteContinuation(1, false, nil)) {
	}
}

// flaggedContinuationFlood is emptyContinuationFlood with flag 0x1 set on
// every CONTINUATION frame: undefined for that type (receivers ignore it),
// so it must not pass for END_STREAM and exempt the frames.
func flaggedContinuationFlood(c *hardH2Conn, _ int) {
	var buf bytes.Buffer
	block := hardRequestBlock(hpack.NewEncoder(&buf), &buf, "/flagged-continuation")
	if !c.wrote(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true})) {
		return
	}
	for c.attacking() && c.wrote(c.fr.WriteRawFrame(http2.FrameContinuation, 0x1, 1, nil)) {
	}
}

// windowUpdateFlood sends connection-level WINDOW_UPDATE frames of
// increment 1, legal until the window would pass 2^31-1.
func windowUpdateFlood(c *hardH2Conn, _ int) {
	for c.attacking() && c.wrote(c.fr.WriteWindowUpdate(0, 1)) {
	}
}

// TestHardeningH2Abuse runs each HTTP/2 attack against the inbound
// listener of a sidecar while a well-behaved h2c client calls through the
// same listener at 50 requests per second.
func TestHardeningH2Abuse(t *testing.T) {
	attacks := []hardAttack{
		// B1: 4 connections (HARDENING.md B1); ≤2,000 upstream requests.
		{name: "rapid reset", conns: 4, read: true, heapLimit: 128 << 20, appLimit: 2000, run: rapidReset},
		// B2: one connection; closed after ≤2× MaxHeaderBytes of excess.
		{name: "CONTINUATION flood", conns: 1, read: true, heapLimit: 128 << 20, run: continuationFlood},
		// B3: 250 streams per connection; 431 or GOAWAY, heap < 64 MiB.
		{name: "HPACK bomb", conns: 1, read: true, streams: 250, heapLimit: 64 << 20, run: hpackBomb},
		{name: "many tiny headers", conns: 1, read: true, streams: 250, heapLimit: 64 << 20, run: tinyHeaders},
		// B4: control-frame floods from a client that never reads.
		{name: "SETTINGS flood", conns: 1, heapLimit: 128 << 20, run: settingsFlood},
		{name: "PING flood", conns: 1, heapLimit: 128 << 20, run: pingFlood},
		// B4, further floods x/net/http2 does not bound by itself (see
		// framewatch.go): control frames from a client that reads every
		// answer, frames with an empty payload, WINDOW_UPDATE frames.
		{name: "PING flood reading the ACKs", conns: 1, read: true, heapLimit: 128 << 20, run: pingFlood},
		{name: "SETTINGS flood reading the ACKs", conns: 1, read: true, heapLimit: 128 << 20, run: settingsFlood},
		{name: "empty DATA flood", conns: 1, read: true, heapLimit: 128 << 20, appLimit: 1, run: emptyDataFlood},
		{name: "empty CONTINUATION flood", conns: 1, read: true, heapLimit: 128 << 20, run: emptyContinuationFlood},
		{name: "empty CONTINUATION flood with an undefined flag", conns: 1, read: true, heapLimit: 128 << 20, run: flaggedContinuationFlood},
		{name: "WINDOW_UPDATE flood", conns: 1, read: true, heapLimit: 128 << 20, run: windowUpdateFlood},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			app := newHardApp()
			s := startSidecar(t, testConfig("echo", startApp(t, app), config.ProtocolHTTP1))
			inbound := s.addr("inbound")
			client := h2cClient()
			t.Cleanup(client.CloseIdleConnections)

			mem := startHardMemory(t)
			probe := startHardProbe(t, client, app, "http://"+inbound+"/probe", "echo", 50)
			// Let the probe establish its connection before the onset.
			waitFor(t, 5*time.Second, "the first probe request", func() bool { return app.seen("probe-0") == 1 })

			conns := make([]*hardH2Conn, a.conns)
			var wg sync.WaitGroup
			for i := range conns {
				conns[i] = dialHardH2(t, inbound, a.read)
				wg.Add(1)
				go func(c *hardH2Conn) {
					defer wg.Done()
					a.run(c, a.streams)
				}(conns[i])
			}
			wg.Wait()

			// Every connection must end, or (header bombs) have refused
			// all of its streams. Wait up to 3 s more to measure how late.
			settled := func(c *hardH2Conn) bool {
				return c.isEnded() || (a.streams > 0 && c.refused.Load() >= int64(a.streams))
			}
			deadline := time.Now().Add(3 * time.Second)
			for _, c := range conns {
				for !settled(c) && time.Now().Before(deadline) {
					select {
					case <-c.ended:
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
			// Keep the client running past the attack (25 more requests,
			// about half a second), so that its aftermath is measured too.
			after := probe.sentSoFar() + 25
			waitFor(t, 10*time.Second, "25 more client requests", func() bool { return probe.sentSoFar() >= after })
			res := probe.stop()
			mem.check(t, a.heapLimit)

			var worst time.Duration
			for i, c := range conns {
				var took time.Duration
				var how string
				switch {
				case c.isEnded():
					took, how = c.endAt, c.endHow
				case a.streams > 0 && c.refused.Load() >= int64(a.streams):
					took, how = time.Duration(c.lastRefusal.Load()), fmt.Sprintf("all %d streams refused (431/RST), connection open", a.streams)
				default:
					t.Errorf("attack connection %d: still open after %v of attack and 3s more: %d abusive frames written, %d streams refused",
						i, hardAttackWindow, c.frames.Load(), c.refused.Load())
					continue
				}
				worst = max(worst, took)
				t.Logf("attack connection %d: %s after %v (%d abusive frames written, %d streams refused)", i, how, took.Round(time.Millisecond), c.frames.Load(), c.refused.Load())
				if took > raceSlowdown*time.Second {
					t.Errorf("attack connection %d: %s only after %v, want within %v of the onset", i, how, took.Round(time.Millisecond), raceSlowdown*time.Second)
				}
			}
			if got := app.other.Load(); got > a.appLimit {
				t.Errorf("the app received %d requests of the attack, want at most %d", got, a.appLimit)
			}
			res.check(t, 25)
			t.Logf("%s: abusers settled within %v; app received %d attack requests; client %s; %s",
				a.name, worst.Round(time.Millisecond), app.other.Load(), res, mem)
		})
	}
}

// TestHardeningH2ReceiveWindow (B6): what a client can make the sidecar
// buffer for it over HTTP/2 is bounded by the windows it advertises: 64 KiB
// per stream (SETTINGS_INITIAL_WINDOW_SIZE) and 1 MiB per connection (the
// initial 64 KiB plus a WINDOW_UPDATE on stream 0), on both listeners.
func TestHardeningH2ReceiveWindow(t *testing.T) {
	m := startMesh(t, "echo", startApp(t, newHardApp()), config.ProtocolHTTP1)
	for name, addr := range map[string]string{"inbound": m.server.addr("inbound"), "outbound": m.client.addr("outbound")} {
		t.Run(name, func(t *testing.T) {
			c := dialHardH2(t, addr, false)
			streamWin, connWin := uint32(65535), uint32(65535) // RFC 9113 defaults until told otherwise
			deadline := time.Now().Add(5 * time.Second)
			_ = c.c.SetReadDeadline(deadline)
			for sawSettings, sawUpdate := false, false; !sawSettings || !sawUpdate; {
				f, err := c.fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading the server's first frames: %v", err)
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if f.IsAck() {
						continue
					}
					sawSettings = true
					if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
						streamWin = v
					}
				case *http2.WindowUpdateFrame:
					if f.StreamID == 0 {
						sawUpdate = true
						connWin += f.Increment
					}
				}
			}
			t.Logf("%s: stream receive window %d bytes, connection receive window %d bytes", name, streamWin, connWin)
			if streamWin != 64<<10 {
				t.Errorf("stream receive window: got %d, want %d (64 KiB)", streamWin, 64<<10)
			}
			if connWin != 1<<20 {
				t.Errorf("connection receive window: got %d, want %d (1 MiB)", connWin, 1<<20)
			}
		})
	}
}

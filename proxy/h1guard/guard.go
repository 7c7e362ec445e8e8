// Package h1guard checks the framing of HTTP/1.x requests on a server
// connection before net/http parses them, and refuses what a proxy must not
// forward.
//
// net/http accepts several inputs that are safe for an origin server but
// dangerous in a proxy (request smuggling; see HARDENING.md §2): a request
// with both Content-Length and Transfer-Encoding (TE wins and the
// connection stays open), Transfer-Encoding on HTTP/1.0, obs-fold, bare LF
// line endings, an absolute-form target whose host differs from Host, and
// CONNECT. By the time a handler runs, the evidence is gone (net/http
// deletes Content-Length and Host from the header map). A Conn therefore
// follows every request's framing as bytes are read, with the same
// boundaries net/http will find, and when a request is malformed it
// withholds that request's bytes, answers 400 (or 431 for header limits)
// with Connection: close and `x-mesh-error: bad_request`, and makes the
// server close the connection. Nothing of a refused request is forwarded,
// because its header block is never completed for net/http.
//
// A malformed chunked body is detected when its bytes arrive; the read
// fails, so a handler that streams the body upstream sees an error before
// the body's end and must abort the upstream request (the proxy's error
// handler answers 400).
package h1guard

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Limits are the header limits enforced while parsing.
type Limits struct {
	// MaxHeaderBytes caps the request line plus header block (and a
	// chunked body's trailer block). Exceeding it answers 431.
	MaxHeaderBytes int
	// MaxHeaderCount caps the number of header fields. Exceeding it
	// answers 431.
	MaxHeaderCount int
}

// RequestError describes why a request was refused.
type RequestError struct {
	Status int    // 400 or 431
	Reason string // short, safe to show to the client
	req    int64  // which request on the connection (1-based)
}

func (e *RequestError) Error() string { return "malformed request: " + e.Reason }

// IsRequestError reports whether err (or what it wraps) is a RequestError,
// i.e. the client sent something malformed.
func IsRequestError(err error) bool {
	var re *RequestError
	return errors.As(err, &re)
}

// Conn wraps a server-side connection. Its Read feeds the framing tracker;
// net/http's server is its only reader (one Read at a time).
//
// A refusal is written only while no request is being handled on the
// connection (every head released to net/http has been answered), so it
// never interleaves with a response; anything net/http writes after it is
// dropped, so the client gets exactly one answer.
type Conn struct {
	net.Conn

	t        tracker
	verdict  *RequestError // sticky once set
	opaque   atomic.Bool   // after a protocol upgrade: stop checking
	heads    atomic.Int64  // request heads released to net/http
	answered atomic.Int64  // requests net/http has finished (Idle calls)
	refused  atomic.Bool   // our refusal has been written
	respond  sync.Once
	// OnReject, if set, is called once when a request is refused.
	OnReject func(*RequestError)
}

// NewConn wraps c.
func NewConn(c net.Conn, lim Limits) *Conn {
	g := &Conn{Conn: c}
	g.t.lim = lim
	g.t.reset()
	return g
}

// readError makes net/http close the connection without writing its own
// response (it treats a read OpError as the peer going away); ours has
// already been written.
func (g *Conn) readError() error {
	return &net.OpError{Op: "read", Net: "tcp", Err: g.verdict}
}

// Read implements net.Conn.
func (g *Conn) Read(p []byte) (int, error) {
	if g.verdict == nil {
		n, err := g.Conn.Read(p)
		if n == 0 || g.opaque.Load() {
			return n, err
		}
		safe, bad := g.t.feed(p[:n])
		g.heads.Store(int64(g.t.heads))
		if bad == nil {
			return n, err
		}
		g.verdict = bad
		if g.OnReject != nil {
			g.OnReject(bad)
		}
		if safe > 0 {
			return safe, nil // the rest of this request is withheld
		}
	}
	return g.refuse()
}

// refuse answers a Read once a request has been found malformed.
func (g *Conn) refuse() (int, error) {
	inFlight := g.heads.Load() > g.answered.Load()
	switch {
	case inFlight && g.verdict.req <= g.heads.Load():
		// The malformed part is the body of the request being handled: its
		// handler's body read fails, so the request is aborted upstream.
		return 0, g.readError()
	case inFlight:
		// A later request is malformed while an earlier one is still being
		// answered (pipelining). Report nothing yet; net/http's background
		// read just ends, and the next read after the answer refuses.
		return 0, nil
	}
	g.respond.Do(func() {
		v := g.verdict
		body := "bad request: " + v.Reason + "\n"
		fmt.Fprintf(g.Conn, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Mesh-Error: bad_request\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
			v.Status, http1StatusText(v.Status), len(body), body)
		g.refused.Store(true)
	})
	return 0, g.readError()
}

// Write implements net.Conn. After the refusal has been written, net/http
// may still react to the partial request it holds (bufio returns a partial
// last line as a line); that second answer is dropped.
func (g *Conn) Write(p []byte) (int, error) {
	if g.refused.Load() {
		return len(p), nil
	}
	return g.Conn.Write(p)
}

func http1StatusText(code int) string {
	if code == 431 {
		return "Request Header Fields Too Large"
	}
	return "Bad Request"
}

// Idle records that net/http has finished a request and is reading the next
// one (wire it to http.Server.ConnState's StateIdle).
func (g *Conn) Idle() { g.answered.Add(1) }

// Refused reports whether a request on this connection was found
// malformed. A handler whose forwarding failed uses it to answer 400
// rather than treat the failure as the upstream's.
func (g *Conn) Refused() bool { return g.verdict != nil && g.verdict.req <= g.heads.Load() }

// Opaque stops checking: the connection now carries an upgraded protocol
// (for example WebSocket after 101 Switching Protocols).
func (g *Conn) Opaque() { g.opaque.Store(true) }

// tracker states.
const (
	sRequestLine = iota
	sHeaders
	sBodyFixed
	sChunkSize
	sChunkData
	sChunkDataCR
	sChunkDataLF
	sTrailers
	sOpaque
)

// tracker follows request boundaries. It keeps only the current line and a
// few header values, never a whole header block.
type tracker struct {
	lim Limits

	state     int
	line      []byte // current line, without its CRLF
	sawCR     bool   // the previous byte was CR
	headBytes int
	fields    int
	remaining uint64 // body bytes left (fixed body or chunk data)

	// what the current request's head said
	method      string
	target      string
	http10      bool
	hosts       []string
	contentLens []string
	transferEnc []string
	connection  []string
	upgrade     string
	upgrades    int
	upgraded    bool // the request asked for a protocol upgrade: after it, bytes are opaque

	heads int // complete, valid request heads seen on the connection
}

// reset prepares for the next request, keeping allocated buffers.
func (t *tracker) reset() {
	*t = tracker{lim: t.lim, heads: t.heads, line: t.line[:0], hosts: t.hosts[:0], contentLens: t.contentLens[:0],
		transferEnc: t.transferEnc[:0], connection: t.connection[:0]}
	t.state = sRequestLine
}

func bad(reason string) *RequestError { return &RequestError{Status: 400, Reason: reason} }

// maxLine bounds a single line we accumulate. Header lines are also bounded
// by MaxHeaderBytes; chunk-size lines are short.
const maxChunkLine = 1024

// feed consumes p. It returns the number of leading bytes of p that may be
// handed to net/http and a non-nil error if the request being read is
// malformed: then p[safe:] must be withheld.
func (t *tracker) feed(p []byte) (safe int, err *RequestError) {
	safe, err = t.scan(p)
	if err != nil {
		// Which request is malformed: the one whose head is being read, or
		// the one whose body or trailers are.
		err.req = int64(t.heads)
		if t.state == sRequestLine || t.state == sHeaders {
			err.req++
		}
	}
	return safe, err
}

func (t *tracker) scan(p []byte) (safe int, err *RequestError) {
	i := 0
	for i < len(p) {
		switch t.state {
		case sOpaque:
			return len(p), nil
		case sBodyFixed, sChunkData:
			n := uint64(len(p) - i)
			if n > t.remaining {
				n = t.remaining
			}
			i += int(n)
			t.remaining -= n
			if t.remaining == 0 {
				if t.state == sBodyFixed {
					t.endRequest()
				} else {
					t.state = sChunkDataCR
				}
			}
			continue
		case sChunkDataCR:
			if p[i] != '\r' {
				return i, bad("chunk data not followed by CRLF")
			}
			t.state = sChunkDataLF
			i++
			continue
		case sChunkDataLF:
			if p[i] != '\n' {
				return i, bad("chunk data not followed by CRLF")
			}
			t.state = sChunkSize
			i++
			continue
		}
		// Line-oriented states: request line, headers, chunk size, trailers.
		b := p[i]
		if t.state == sRequestLine || t.state == sHeaders || t.state == sTrailers {
			t.headBytes++
			if t.headBytes > t.lim.MaxHeaderBytes {
				return i, &RequestError{Status: 431, Reason: "header block too large"}
			}
		}
		if t.sawCR {
			if b != '\n' {
				return i, bad("bare CR")
			}
			t.sawCR = false
			if e := t.endLine(); e != nil {
				return i, e
			}
			i++
			continue
		}
		switch b {
		case '\r':
			t.sawCR = true
		case '\n':
			return i, bad("bare LF line ending")
		case 0:
			return i, bad("NUL byte")
		default:
			if t.state == sChunkSize && len(t.line) >= maxChunkLine {
				return i, bad("chunk size line too long")
			}
			t.line = append(t.line, b)
		}
		i++
	}
	return len(p), nil
}

// endLine processes the line just completed by CRLF.
func (t *tracker) endLine() *RequestError {
	line := t.line
	t.line = t.line[:0]
	switch t.state {
	case sRequestLine:
		return t.requestLine(line)
	case sHeaders:
		if len(line) == 0 {
			if e := t.endHead(); e != nil {
				return e
			}
			t.heads++
			return nil
		}
		return t.headerLine(line)
	case sChunkSize:
		return t.chunkSize(line)
	case sTrailers:
		if len(line) == 0 {
			t.endRequest()
			return nil
		}
		t.fields++
		if t.fields > t.lim.MaxHeaderCount {
			return &RequestError{Status: 431, Reason: "too many trailer fields"}
		}
		_, _, e := splitField(line)
		return e
	}
	return nil
}

func (t *tracker) requestLine(line []byte) *RequestError {
	if len(line) == 0 {
		return bad("empty request line")
	}
	m, rest, ok := bytes.Cut(line, []byte{' '})
	target, version, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok || !ok2 || len(m) == 0 || len(target) == 0 {
		return bad("malformed request line")
	}
	for _, c := range m {
		if !isTokenChar(c) {
			return bad("invalid method")
		}
	}
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		t.http10 = true
	default:
		return bad("unsupported HTTP version")
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f || c == '#' {
			return bad("invalid character in request target")
		}
	}
	t.method = string(m)
	t.target = string(target)
	if t.method == "CONNECT" {
		return bad("CONNECT is not supported")
	}
	path, _, _ := strings.Cut(t.target, "?")
	if strings.Contains(path, "%00") {
		return bad("NUL in path")
	}
	t.state = sHeaders
	return nil
}

func (t *tracker) headerLine(line []byte) *RequestError {
	if line[0] == ' ' || line[0] == '\t' {
		return bad("obsolete line folding")
	}
	t.fields++
	if t.fields > t.lim.MaxHeaderCount {
		return &RequestError{Status: 431, Reason: "too many header fields"}
	}
	name, value, e := splitField(line)
	if e != nil {
		return e
	}
	// Only the fields that decide framing and routing are kept, as strings.
	switch {
	case bytes.EqualFold(name, hostName):
		t.hosts = append(t.hosts, string(value))
	case bytes.EqualFold(name, contentLengthName):
		t.contentLens = append(t.contentLens, string(value))
	case bytes.EqualFold(name, transferEncodingName):
		t.transferEnc = append(t.transferEnc, string(value))
	case bytes.EqualFold(name, connectionName):
		t.connection = append(t.connection, string(value))
	case bytes.EqualFold(name, upgradeName):
		t.upgrade = string(value)
		t.upgrades++
	}
	return nil
}

var (
	hostName             = []byte("host")
	contentLengthName    = []byte("content-length")
	transferEncodingName = []byte("transfer-encoding")
	connectionName       = []byte("connection")
	upgradeName          = []byte("upgrade")
)

// splitField checks a header or trailer field line and returns its name
// and trimmed value (slices of line, valid until the next line).
func splitField(line []byte) ([]byte, []byte, *RequestError) {
	name, value, ok := bytes.Cut(line, []byte{':'})
	if !ok {
		return nil, nil, bad("header line without a colon")
	}
	if len(name) == 0 {
		return nil, nil, bad("empty header name")
	}
	for _, c := range name {
		if !isTokenChar(c) || c == '_' {
			return nil, nil, bad("invalid header name")
		}
	}
	for _, c := range value {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return nil, nil, bad("control character in header value")
		}
	}
	return name, bytes.Trim(value, " \t"), nil
}

// endHead decides the body framing once the header block is complete, and
// refuses framings that two parsers could read differently.
func (t *tracker) endHead() *RequestError {
	if len(t.hosts) > 1 {
		return bad("duplicate Host")
	}
	if len(t.hosts) == 0 && !t.http10 {
		return bad("missing Host")
	}
	if e := t.checkAbsoluteForm(); e != nil {
		return e
	}
	if t.upgrades > 1 {
		return bad("duplicate Upgrade")
	}
	if hasToken(t.connection, "upgrade") && t.upgrade != "" {
		if strings.Contains(strings.ToLower(t.upgrade), "h2c") {
			return bad("h2c upgrade is not supported")
		}
		t.upgraded = true
	}
	if len(t.transferEnc) > 0 {
		switch {
		case len(t.contentLens) > 0:
			return bad("both Content-Length and Transfer-Encoding")
		case t.http10:
			return bad("Transfer-Encoding on HTTP/1.0")
		case len(t.transferEnc) > 1 || !strings.EqualFold(t.transferEnc[0], "chunked"):
			return bad("unsupported Transfer-Encoding")
		}
		t.state = sChunkSize
		t.fields = 0
		return nil
	}
	if len(t.contentLens) > 1 {
		return bad("duplicate Content-Length")
	}
	if len(t.contentLens) == 1 {
		v := t.contentLens[0]
		if v == "" || len(v) > 18 || strings.TrimLeft(v, "0123456789") != "" {
			return bad("invalid Content-Length")
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		if n > 0 {
			t.state = sBodyFixed
			t.remaining = n
			return nil
		}
	}
	t.endRequest()
	return nil
}

func (t *tracker) checkAbsoluteForm() *RequestError {
	lower := strings.ToLower(t.target)
	var rest string
	switch {
	case strings.HasPrefix(lower, "http://"):
		rest = t.target[len("http://"):]
	case strings.HasPrefix(lower, "https://"):
		rest = t.target[len("https://"):]
	default:
		originForm := t.target[0] == '/'
		asteriskForm := t.target == "*" && t.method == "OPTIONS"
		if !originForm && !asteriskForm {
			return bad("invalid request target")
		}
		return nil
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority = rest[:i]
	}
	if authority == "" || strings.Contains(authority, "@") {
		return bad("invalid authority in request target")
	}
	if len(t.hosts) == 1 && !strings.EqualFold(t.hosts[0], authority) {
		return bad("request target host differs from Host")
	}
	return nil
}

func (t *tracker) chunkSize(line []byte) *RequestError {
	size, ext, _ := bytes.Cut(line, []byte{';'})
	if len(size) == 0 || len(size) > 15 {
		return bad("invalid chunk size")
	}
	var n uint64
	for _, c := range size {
		v, ok := hexVal(c)
		if !ok {
			return bad("invalid chunk size")
		}
		n = n<<4 | uint64(v)
	}
	for _, c := range ext {
		if c < ' ' && c != '\t' {
			return bad("invalid chunk extension")
		}
	}
	if n == 0 {
		t.state = sTrailers
		t.fields = 0
		t.headBytes = 0
		return nil
	}
	t.state = sChunkData
	t.remaining = n
	return nil
}

// endRequest moves to the next request on the connection, or to opaque
// mode after an upgrade request.
func (t *tracker) endRequest() {
	if t.upgraded {
		t.state = sOpaque
		return
	}
	t.reset()
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// isTokenChar reports whether c is an RFC 9110 tchar.
func isTokenChar(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

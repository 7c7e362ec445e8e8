package h1guard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testLimits are small so the limit cases stay short.
var testLimits = Limits{MaxHeaderBytes: 4096, MaxHeaderCount: 20}

const (
	chunkedHead = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	getX        = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
)

// guardCase is one raw input and the verdict the tracker must reach.
type guardCase struct {
	name string
	in   string
	// status is 0 when the input is acceptable, else 400 or 431.
	status int
	// reason is a substring of RequestError.Reason ("" to skip the check).
	reason string
	// withhold marks the byte the tracker must never release for a refused
	// input: the last byte of the first occurrence of withhold in in. Empty
	// means "\r\n\r\n" (the end of the first header block): the refused
	// request's head must never be complete in what net/http sees.
	withhold string
}

// headWithFields returns a GET whose header block has n fields (Host
// included).
func headWithFields(n int) string {
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "X-F%d: v\r\n", i)
	}
	b.WriteString("\r\n")
	return b.String()
}

// headOfSize returns a GET whose request line plus header block (final
// CRLF included) is exactly n bytes.
func headOfSize(n int) string {
	const pre = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
	const post = "\r\n\r\n"
	return pre + strings.Repeat("a", n-len(pre)-len(post)) + post
}

func guardCases() []guardCase {
	pad := func(n int) string { return strings.Repeat("p", n) }
	return []guardCase{
		// Valid controls.
		{name: "simple GET", in: getX},
		{name: "HTTP/1.0 without Host", in: "GET / HTTP/1.0\r\n\r\n"},
		{name: "POST with Content-Length", in: "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"},
		{name: "Content-Length 0", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + getX},
		{name: "Content-Length with leading zeros", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello" + getX},
		{name: "Content-Length of 18 digits", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999\r\n\r\nabc"},
		{name: "CL body that looks malformed", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n\x00\n\r_ :\r\n\n" + getX},
		{name: "chunked with extensions and trailers",
			in: chunkedHead + "5;name=val\r\nhello\r\n6;a;b=\"q t\"\r\n world\r\nA\r\n0123456789\r\n0;last\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"},
		{name: "chunked data containing CRLF and NUL", in: chunkedHead + "7\r\na\r\n0\x00\r\n\r\n0\r\n\r\n" + getX},
		{name: "Transfer-Encoding Chunked case-insensitive", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"},
		{name: "two pipelined requests", in: getX + "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "three pipelined with bodies",
			in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + chunkedHead + "3\r\nabc\r\n0\r\n\r\n" + getX},
		{name: "absolute-form with matching Host", in: "GET http://x/a?b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "absolute-form matching Host case-insensitive", in: "GET HTTP://Example.COM/a HTTP/1.1\r\nHost: example.com\r\n\r\n"},
		{name: "absolute-form on HTTP/1.0 without Host", in: "GET http://x/ HTTP/1.0\r\n\r\n"},
		{name: "OPTIONS asterisk", in: "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "%00 in query is allowed", in: "GET /a?b=%00 HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "tab and obs-text in header value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb\xe9\r\n\r\n"},
		{name: "exactly MaxHeaderCount fields", in: headWithFields(20)},
		{name: "head of exactly MaxHeaderBytes", in: headOfSize(4096)},
		{name: "websocket upgrade then opaque bytes",
			in: "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello\n\n\x00 GET / HTTP/9\r\nTransfer-Encoding: x\r\n\r\n"},
		{name: "Content-Length with surrounding whitespace", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  2 \r\n\r\nab"},

		// Framing conflicts (A2).
		{name: "CL+TE", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", status: 400, reason: "both Content-Length and Transfer-Encoding"},
		{name: "TE+CL order", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", status: 400, reason: "both Content-Length and Transfer-Encoding"},
		{name: "TE on HTTP/1.0", in: "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400, reason: "HTTP/1.0"},
		{name: "TE chunked, identity", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", status: 400, reason: "unsupported Transfer-Encoding"},
		{name: "TE identity, chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", status: 400, reason: "unsupported Transfer-Encoding"},
		{name: "TE xchunked", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", status: 400, reason: "unsupported Transfer-Encoding"},
		{name: "TE empty", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", status: 400, reason: "unsupported Transfer-Encoding"},
		{name: "duplicate TE", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400, reason: "unsupported Transfer-Encoding"},
		{name: "duplicate CL same value", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", status: 400, reason: "duplicate Content-Length"},
		{name: "duplicate CL different values", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", status: 400, reason: "duplicate Content-Length"},
		{name: "CL list", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", status: 400, reason: "invalid Content-Length"},
		{name: "CL +1", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na", status: 400, reason: "invalid Content-Length"},
		{name: "CL -1", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\na", status: 400, reason: "invalid Content-Length"},
		{name: "CL 0x1", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\na", status: 400, reason: "invalid Content-Length"},
		{name: "CL 1Z", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1Z\r\n\r\na", status: 400, reason: "invalid Content-Length"},
		{name: "CL empty", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", status: 400, reason: "invalid Content-Length"},
		{name: "CL 19 digits", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\na", status: 400, reason: "invalid Content-Length"},
		{name: "CL 20 digits overflow", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617\r\n\r\na", status: 400, reason: "invalid Content-Length"},

		// Header syntax (A1).
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", status: 400, reason: "folding"},
		{name: "obs-fold with tab", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", status: 400, reason: "folding"},
		{name: "leading whitespace on first header", in: "GET / HTTP/1.1\r\n Host: x\r\n\r\n", status: 400, reason: "folding"},
		{name: "bare CR in header value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", status: 400, reason: "bare CR"},
		{name: "bare CR in request line", in: "GET /\r HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "bare CR"},
		{name: "bare LF line endings", in: "GET / HTTP/1.1\nHost: x\n\n", status: 400, reason: "bare LF", withhold: "x\n\n"},
		{name: "bare LF on one header", in: "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", status: 400, reason: "bare LF"},
		{name: "bare LF ends head", in: "GET / HTTP/1.1\r\nHost: x\r\n\n", status: 400, reason: "bare LF", withhold: "\r\n\n"},
		{name: "NUL in header value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", status: 400, reason: "NUL"},
		{name: "control character in header value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", status: 400, reason: "control character"},
		{name: "DEL in header value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", status: 400, reason: "control character"},
		{name: "underscore in header name", in: "GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n", status: 400, reason: "invalid header name"},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc", status: 400, reason: "invalid header name"},
		{name: "empty header name", in: "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", status: 400, reason: "empty header name"},
		{name: "header line without colon", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A v\r\n\r\n", status: 400, reason: "colon"},
		{name: "header name with byte >= 0x80", in: "GET / HTTP/1.1\r\nHost: x\r\nX-\x80: v\r\n\r\n", status: 400, reason: "invalid header name"},

		// Request line and target (A2).
		{name: "CONNECT", in: "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", status: 400, reason: "CONNECT"},
		{name: "absolute-form with differing Host", in: "GET http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "differs from Host"},
		{name: "absolute-form https with differing port", in: "GET https://x:8443/ HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "differs from Host"},
		{name: "userinfo in absolute-form", in: "GET http://user@x/ HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "authority"},
		{name: "absolute-form without authority", in: "GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "authority"},
		{name: "missing Host on HTTP/1.1", in: "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", status: 400, reason: "missing Host"},
		{name: "duplicate Host", in: "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", status: 400, reason: "duplicate Host"},
		{name: "%00 in path", in: "GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "NUL in path"},
		{name: "# in target", in: "GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "request target"},
		{name: "origin-form without slash", in: "GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "request target"},
		{name: "asterisk on GET", in: "GET * HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "request target"},
		{name: "HTTP/2.0 version", in: "GET / HTTP/2.0\r\nHost: x\r\n\r\n", status: 400, reason: "version"},
		{name: "HTTP/1.2 version", in: "GET / HTTP/1.2\r\nHost: x\r\n\r\n", status: 400, reason: "version"},
		{name: "lower-case version", in: "GET / http/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "version"},
		{name: "extra token after version", in: "GET / HTTP/1.1 x\r\nHost: x\r\n\r\n", status: 400, reason: "version"},
		{name: "double space in request line", in: "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "request line"},
		{name: "invalid method", in: "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, reason: "method"},
		{name: "Upgrade h2c", in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", status: 400, reason: "h2c"},
		{name: "Upgrade h2c hidden behind a second Upgrade", in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nUpgrade: websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
			status: 400, reason: "duplicate Upgrade"},
		{name: "Upgrade alone is not opaque", in: "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", status: 400, reason: "duplicate Host", withhold: "y\r\n\r\n"},

		// Limits.
		{name: "more than MaxHeaderCount fields", in: headWithFields(21), status: 431, reason: "too many header fields"},
		{name: "head one byte over MaxHeaderBytes", in: headOfSize(4097), status: 431, reason: "too large"},
		{name: "huge header value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + pad(8000) + "\r\n\r\n", status: 431, reason: "too large"},
		{name: "huge request line", in: "GET /" + pad(5000) + " HTTP/1.1\r\nHost: x\r\n\r\n", status: 431, reason: "too large"},

		// Pipelining: the second request's error must be found.
		{name: "pipelined second has CL+TE", in: getX + "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: 400, reason: "both", withhold: "chunked\r\n\r\n"},
		{name: "pipelined after CL body", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\nX_A: b\r\n\r\n",
			status: 400, reason: "invalid header name", withhold: "X_A: b\r\n\r\n"},
		{name: "pipelined after chunked body", in: chunkedHead + "3\r\nabc\r\n0\r\n\r\nGET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n",
			status: 400, reason: "differs", withhold: "Host: x\r\n\r\n"},
		{name: "smuggle via CL body counted as chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
			status: 400, reason: "both"},

		// Chunked body malformations (A3). The head is valid and released;
		// the offending byte and everything after it are withheld.
		{name: "chunk: bare LF after size", in: chunkedHead + "5\nhello\r\n0\r\n\r\n", status: 400, reason: "bare LF", withhold: "5\n"},
		{name: "chunk: missing CRLF after data", in: chunkedHead + "5\r\nhello0\r\n\r\n", status: 400, reason: "CRLF", withhold: "hello0"},
		{name: "chunk: LF only after data", in: chunkedHead + "5\r\nhello\n0\r\n\r\n", status: 400, reason: "CRLF", withhold: "hello\n"},
		{name: "chunk: non-hex size", in: chunkedHead + "g\r\nhello\r\n0\r\n\r\n", status: 400, reason: "invalid chunk size", withhold: "g\r\n"},
		{name: "chunk: size with leading space", in: chunkedHead + " 5\r\nhello\r\n0\r\n\r\n", status: 400, reason: "invalid chunk size", withhold: " 5\r\n"},
		{name: "chunk: size with trailing space", in: chunkedHead + "5 \r\nhello\r\n0\r\n\r\n", status: 400, reason: "invalid chunk size", withhold: "5 \r\n"},
		{name: "chunk: oversize hex", in: chunkedHead + "10000000000000000\r\nhello\r\n0\r\n\r\n", status: 400, reason: "invalid chunk size", withhold: "0000\r\n"},
		{name: "chunk: 0x5 size", in: chunkedHead + "0x5\r\nhello\r\n0\r\n\r\n", status: 400, reason: "invalid chunk size", withhold: "0x5\r\n"},
		{name: "chunk: negative size", in: chunkedHead + "-5\r\nhello\r\n0\r\n\r\n", status: 400, reason: "invalid chunk size", withhold: "-5\r\n"},
		{name: "chunk: empty size line", in: chunkedHead + "\r\nhello\r\n0\r\n\r\n", status: 400, reason: "invalid chunk size", withhold: "\r\n\r\n\r\n"},
		{name: "chunk: data longer than size", in: chunkedHead + "3\r\nhello\r\n0\r\n\r\n", status: 400, reason: "CRLF", withhold: "hell"},
		{name: "chunk: LF-only terminator", in: chunkedHead + "5\r\nhello\r\n0\n\n", status: 400, reason: "bare LF", withhold: "0\n"},
		{name: "chunk: LF-only last line", in: chunkedHead + "5\r\nhello\r\n0\r\n\n", status: 400, reason: "bare LF", withhold: "0\r\n\n"},
		{name: "chunk: invalid char in extension", in: chunkedHead + "5;a=\x01\r\nhello\r\n0\r\n\r\n", status: 400, reason: "extension", withhold: "\x01\r\n"},
		{name: "chunk: bare CR in size line", in: chunkedHead + "5\rhello\r\n0\r\n\r\n", status: 400, reason: "bare CR", withhold: "5\rh"},
		{name: "chunk: NUL in extension", in: chunkedHead + "5;\x00\r\nhello\r\n0\r\n\r\n", status: 400, reason: "NUL", withhold: "5;\x00"},
		{name: "chunk: size line too long", in: chunkedHead + "5;" + strings.Repeat("e", 2000) + "\r\nhello\r\n0\r\n\r\n", status: 400, reason: "too long", withhold: "\r\nhello"},
		{name: "chunk: trailer with obs-fold", in: chunkedHead + "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", status: 400, withhold: " b\r\n\r\n"},
		{name: "chunk: trailer with underscore", in: chunkedHead + "5\r\nhello\r\n0\r\nX_T: a\r\n\r\n", status: 400, reason: "invalid header name", withhold: "a\r\n\r\n"},
		{name: "chunk: trailer with bare LF", in: chunkedHead + "5\r\nhello\r\n0\r\nX-T: a\n\r\n", status: 400, reason: "bare LF", withhold: "a\n"},
		{name: "chunk: too many trailer fields", in: chunkedHead + "0\r\n" + strings.Repeat("X-T: a\r\n", 21) + "\r\n", status: 431, reason: "trailer", withhold: strings.Repeat("X-T: a\r\n", 21)},
		{name: "chunk: trailer block too large", in: chunkedHead + "0\r\nX-T: " + pad(5000) + "\r\n\r\n", status: 431, reason: "too large", withhold: pad(5000) + "\r\n\r\n"},
	}
}

// feedResult is what feeding a sequence of chunks produced.
type feedResult struct {
	released int // bytes handed on: whole chunks before the verdict, then safe
	err      *RequestError
}

// feedChunks feeds chunks to a fresh tracker until one is refused.
func feedChunks(t testing.TB, lim Limits, chunks ...[]byte) feedResult {
	t.Helper()
	var tr tracker
	tr.lim = lim
	tr.reset()
	var r feedResult
	for _, c := range chunks {
		safe, err := tr.feed(c)
		if safe < 0 || safe > len(c) {
			t.Fatalf("feed returned safe=%d for a chunk of %d bytes: want 0..%d", safe, len(c), len(c))
		}
		if err == nil && safe != len(c) {
			t.Fatalf("feed returned safe=%d without an error for a chunk of %d bytes: want %d", safe, len(c), len(c))
		}
		r.released += safe
		if err != nil {
			r.err = err
			return r
		}
	}
	return r
}

func verdictString(e *RequestError) string {
	if e == nil {
		return "accepted"
	}
	return fmt.Sprintf("%d %q", e.Status, e.Reason)
}

// check compares a result with the case's expectation.
func (c guardCase) check(t *testing.T, how string, r feedResult) {
	t.Helper()
	if c.status == 0 {
		if r.err != nil {
			t.Errorf("%s: got %s, want accepted", how, verdictString(r.err))
		}
		if r.released != len(c.in) {
			t.Errorf("%s: released %d bytes, want all %d", how, r.released, len(c.in))
		}
		return
	}
	if r.err == nil {
		t.Errorf("%s: got accepted, want %d (%q)", how, c.status, c.reason)
		return
	}
	if r.err.Status != c.status || !strings.Contains(r.err.Reason, c.reason) {
		t.Errorf("%s: got %s, want %d with reason containing %q", how, verdictString(r.err), c.status, c.reason)
	}
	if max := c.maxRelease(t); r.released > max {
		t.Errorf("%s: released %d bytes, want at most %d (byte %q at offset %d must be withheld)",
			how, r.released, max, c.in[max], max)
	}
}

// maxRelease is the offset of the first byte that must be withheld.
func (c guardCase) maxRelease(t *testing.T) int {
	w := c.withhold
	if w == "" {
		w = "\r\n\r\n"
	}
	i := strings.Index(c.in, w)
	if i < 0 {
		t.Fatalf("test bug: withhold marker %q not in input", w)
	}
	return i + len(w) - 1
}

func TestTrackerTable(t *testing.T) {
	for _, c := range guardCases() {
		t.Run(c.name, func(t *testing.T) {
			in := []byte(c.in)
			c.check(t, "whole", feedChunks(t, testLimits, in))

			bytewise := make([][]byte, len(in))
			for i := range in {
				bytewise[i] = in[i : i+1]
			}
			c.check(t, "byte at a time", feedChunks(t, testLimits, bytewise...))

			if len(in) <= 512 {
				for k := 1; k < len(in); k++ {
					c.check(t, fmt.Sprintf("split at %d", k), feedChunks(t, testLimits, in[:k], in[k:]))
				}
				// Three pieces around the middle, to cross more state edges.
				for k := 1; k+3 < len(in); k += 3 {
					c.check(t, fmt.Sprintf("split at %d,%d", k, k+3), feedChunks(t, testLimits, in[:k], in[k:k+3], in[k+3:]))
				}
			}
		})
	}
}

// TestTrackerVerdictIndependentOfSplit checks the exact verdict (status and
// reason), not only the expected substring, is the same however the bytes
// arrive.
func TestTrackerVerdictIndependentOfSplit(t *testing.T) {
	for _, c := range guardCases() {
		in := []byte(c.in)
		want := verdictString(feedChunks(t, testLimits, in).err)
		step := 1
		if len(in) > 512 {
			step = len(in) / 97
		}
		for k := 1; k < len(in); k += step {
			if got := verdictString(feedChunks(t, testLimits, in[:k], in[k:]).err); got != want {
				t.Errorf("%s: split at %d: got %s, want %s (as when fed whole)", c.name, k, got, want)
			}
		}
	}
}

// TestTrackerSequence checks the tracker keeps request boundaries across a
// long keep-alive sequence and still catches a late error.
func TestTrackerSequence(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 50; i++ {
		switch i % 3 {
		case 0:
			b.WriteString(getX)
		case 1:
			fmt.Fprintf(&b, "POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", i, i, strings.Repeat("\r\n", i/2)+strings.Repeat("z", i%2))
		case 2:
			b.WriteString(chunkedHead + "2\r\n\r\n\r\n0\r\n\r\n")
		}
	}
	good := b.String()
	if r := feedChunks(t, testLimits, []byte(good)); r.err != nil || r.released != len(good) {
		t.Fatalf("50 valid requests: got %s, released %d; want accepted, released %d", verdictString(r.err), r.released, len(good))
	}
	bad := good + "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"
	r := feedChunks(t, testLimits, []byte(bad))
	if r.err == nil || r.err.Status != 400 {
		t.Fatalf("51st request with CL+TE: got %s, want 400", verdictString(r.err))
	}
	if limit := len(bad) - 1; r.released > limit || r.released < len(good) {
		t.Errorf("released %d bytes, want between %d (all good requests) and %d", r.released, len(good), limit)
	}
}

func TestIsRequestError(t *testing.T) {
	re := &RequestError{Status: 400, Reason: "x"}
	tests := []struct {
		err  error
		want bool
	}{
		{re, true},
		{fmt.Errorf("wrapped: %w", re), true},
		{&net.OpError{Op: "read", Net: "tcp", Err: re}, true},
		{errors.New("other"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := IsRequestError(tt.err); got != tt.want {
			t.Errorf("IsRequestError(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if got, want := re.Error(), "malformed request: x"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// --- Conn with a real net/http server ---------------------------------

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	c    net.Conn
	addr net.Addr
	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	used bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.used {
		l.used = true
		l.mu.Unlock()
		return l.c, nil
	}
	l.mu.Unlock()
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// guardedServer serves one guarded loopback connection with net/http, wired
// as the proxy wires it (proxy/listener.go: ConnState's StateIdle calls
// Idle).
type guardedServer struct {
	client   net.Conn
	handled  atomic.Int32
	rejected atomic.Int32
	canceled atomic.Int32 // handlers whose request context ended early
	paths    chan string
	// hold, if set, is how long a handler waits (for its context to end)
	// before answering.
	hold time.Duration
}

func startGuardedServer(t *testing.T, lim Limits, hold time.Duration) *guardedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ac := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ac <- accepted{c, err}
	}()
	client, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var sc net.Conn
	select {
	case a := <-ac:
		if a.err != nil {
			t.Fatal(a.err)
		}
		sc = a.c
	case <-time.After(5 * time.Second):
		t.Fatal("accept timed out")
	}

	gs := &guardedServer{client: client, paths: make(chan string, 16), hold: hold}
	g := NewConn(sc, lim)
	g.OnReject = func(*RequestError) { gs.rejected.Add(1) }
	type ctxKey struct{}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, ctxKey{}, c)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if gc, ok := c.(*Conn); ok && st == http.StateIdle {
				gc.Idle()
			}
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			gs.handled.Add(1)
			gs.paths <- r.URL.Path
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				w.WriteHeader(http.StatusTeapot) // the body was refused
				return
			}
			if gs.hold > 0 {
				timer := time.NewTimer(gs.hold)
				select {
				case <-r.Context().Done():
					gs.canceled.Add(1)
				case <-timer.C:
				}
				timer.Stop()
			}
			_, _ = io.WriteString(w, "ok")
		}),
	}
	ol := &oneConnListener{c: g, addr: sc.LocalAddr(), done: make(chan struct{})}
	served := make(chan struct{})
	go func() { _ = srv.Serve(ol); close(served) }()
	t.Cleanup(func() {
		client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ol.Close()
		select {
		case <-served:
		case <-ctx.Done():
			t.Error("server did not stop within 5s")
		}
	})
	return gs
}

// readResponses reads responses from the client side until the connection
// ends, within d. It returns them and how the connection ended.
func readResponses(t *testing.T, c net.Conn, d time.Duration) ([]*http.Response, error) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	return readResponsesFrom(bufio.NewReader(c))
}

func readResponsesFrom(br *bufio.Reader) ([]*http.Response, error) {
	var out []*http.Response
	for {
		if _, err := br.Peek(1); err != nil {
			return out, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return out, err
		}
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		out = append(out, resp)
	}
}

// closedCleanly reports whether err means the peer closed the connection
// (EOF, or a reset because unread bytes were discarded), not a timeout.
func closedCleanly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func bodyOf(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// checkRefusal checks resp is the guard's refusal.
func checkRefusal(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status: got %d, want %d", resp.StatusCode, status)
	}
	if resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
		t.Errorf("protocol: got %s, want HTTP/1.1", resp.Proto)
	}
	if got := resp.Header.Get("X-Mesh-Error"); got != "bad_request" {
		t.Errorf("X-Mesh-Error: got %q, want %q", got, "bad_request")
	}
	if !resp.Close { // ReadResponse consumes the Connection: close header into Close
		t.Errorf("Connection: close missing (Close=false), want close")
	}
}

// checkAnsweredOnce checks nothing followed the refusal: extra are the
// responses read after it. (net/http may react to a partial header line
// the guard released; Conn must drop that second answer.)
func checkAnsweredOnce(t *testing.T, extra []*http.Response) {
	t.Helper()
	for i, x := range extra {
		t.Errorf("further response %d after the refusal: got %d X-Mesh-Error=%q body %q, want none",
			i+1, x.StatusCode, x.Header.Get("X-Mesh-Error"), bodyOf(x))
	}
}

func TestConnRefusesBadRequest(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status int
	}{
		{"CL+TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400},
		{"TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"CONNECT", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 400},
		{"Host mismatch", "GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 400},
		{"too many fields", headWithFields(30), 431},
		{"header block too large", headOfSize(5000), 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gs := startGuardedServer(t, testLimits, 0)
			if _, err := io.WriteString(gs.client, tt.in); err != nil {
				t.Fatal(err)
			}
			resps, end := readResponses(t, gs.client, 5*time.Second)
			if len(resps) == 0 {
				t.Fatalf("got no response (end: %v), want one %d", end, tt.status)
			}
			checkRefusal(t, resps[0], tt.status)
			if !closedCleanly(end) {
				t.Errorf("after the refusal: got %v, want EOF (connection closed)", end)
			}
			if n := gs.handled.Load(); n != 0 {
				t.Errorf("handler ran %d times, want 0", n)
			}
			if n := gs.rejected.Load(); n != 1 {
				t.Errorf("OnReject called %d times, want 1", n)
			}
			checkAnsweredOnce(t, resps[1:])
		})
	}
}

// TestConnBadRequestSentSlowly sends a refused request one byte per write.
func TestConnBadRequestSentSlowly(t *testing.T) {
	gs := startGuardedServer(t, testLimits, 0)
	in := "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < len(in); i++ {
			if _, err := gs.client.Write([]byte{in[i]}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	resps, end := readResponses(t, gs.client, 5*time.Second)
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if len(resps) == 0 {
		t.Fatalf("got no response (end: %v), want one 400", end)
	}
	checkRefusal(t, resps[0], 400)
	if !closedCleanly(end) {
		t.Errorf("after the refusal: got %v, want EOF", end)
	}
	if n := gs.handled.Load(); n != 0 {
		t.Errorf("handler ran %d times, want 0", n)
	}
	checkAnsweredOnce(t, resps[1:])
}

// TestConnPipelinedGoodThenBad: the good request is answered by the
// handler, undisturbed, then the refusal follows, then the connection
// closes. The handler holds its response for 200ms, watching its request
// context: a refusal of the next request must not cancel it.
func TestConnPipelinedGoodThenBad(t *testing.T) {
	gs := startGuardedServer(t, testLimits, 200*time.Millisecond)
	in := "GET /good HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	if _, err := io.WriteString(gs.client, in); err != nil {
		t.Fatal(err)
	}
	resps, end := readResponses(t, gs.client, 5*time.Second)
	if len(resps) < 2 {
		t.Fatalf("got %d responses (end: %v), want 2 (200 then 400)", len(resps), end)
	}
	if !closedCleanly(end) {
		t.Errorf("after the refusal: got %v, want EOF", end)
	}
	if n := gs.handled.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	if p := <-gs.paths; p != "/good" {
		t.Errorf("handled path: got %q, want /good", p)
	}
	var refusals, oks int
	for _, r := range resps {
		switch {
		case r.StatusCode == 200:
			oks++
		case r.Header.Get("X-Mesh-Error") == "bad_request":
			refusals++
		}
	}
	if oks != 1 || refusals != 1 {
		t.Errorf("got %d responses 200 and %d refusals, want 1 and 1", oks, refusals)
	}
	// Order: the handler's answer first, then the refusal.
	if b := bodyOf(resps[0]); resps[0].StatusCode != 200 || b != "ok" {
		t.Errorf("first response: got %d %q, want the handler's 200 %q (the refusal of the pipelined request must "+
			"not be written before the in-flight response)", resps[0].StatusCode, b, "ok")
	}
	checkRefusal(t, resps[1], 400)
	if n := gs.canceled.Load(); n != 0 {
		t.Errorf("the in-flight request's context was cancelled: got %d cancelled handlers, want 0 (the refusal of "+
			"the next request must not reach net/http's background read as an error)", n)
	}
	checkAnsweredOnce(t, resps[2:])
}

// TestConnKeepAliveThenBad: the bad request arrives on an idle keep-alive
// connection, after the first response was read.
func TestConnKeepAliveThenBad(t *testing.T) {
	gs := startGuardedServer(t, testLimits, 0)
	if _, err := io.WriteString(gs.client, "GET /good HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = gs.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(gs.client)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("first response: %v", err)
	}
	if b := bodyOf(resp); resp.StatusCode != 200 || b != "ok" {
		t.Fatalf("first response: got %d %q, want 200 %q", resp.StatusCode, b, "ok")
	}
	if _, err := io.WriteString(gs.client, "GET / HTTP/1.1\r\nHost: x\r\nX_Y: z\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resps, end := readResponsesFrom(br)
	if len(resps) == 0 {
		t.Fatalf("got no second response (end: %v), want 400", end)
	}
	checkRefusal(t, resps[0], 400)
	if !closedCleanly(end) {
		t.Errorf("after the refusal: got %v, want EOF", end)
	}
	if n := gs.handled.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	checkAnsweredOnce(t, resps[1:])
}

// TestConnMalformedChunkedBody: the head is valid, so the handler runs; its
// body read must fail before the body's end.
func TestConnMalformedChunkedBody(t *testing.T) {
	gs := startGuardedServer(t, testLimits, 0)
	in := chunkedHead + "5\r\nhello\r\n3\r\nabcXX\r\n0\r\n\r\n"
	if _, err := io.WriteString(gs.client, in); err != nil {
		t.Fatal(err)
	}
	resps, end := readResponses(t, gs.client, 5*time.Second)
	if n := gs.handled.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	if len(resps) == 0 {
		t.Fatalf("got no response (end: %v), want the handler's 418", end)
	}
	if resps[0].StatusCode != http.StatusTeapot {
		t.Errorf("first response: got %d, want 418 (the handler's body read failed)", resps[0].StatusCode)
	}
	for i, r := range resps {
		if r.StatusCode == 200 {
			t.Errorf("response %d: got 200, want no success", i)
		}
	}
	if !closedCleanly(end) {
		t.Errorf("connection end: got %v, want EOF", end)
	}
}

// TestConnOpaqueAfterUpgrade: once Opaque is called nothing is checked.
func TestConnOpaqueAfterUpgrade(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	g := NewConn(b, testLimits)
	g.Opaque()
	in := []byte("\x00\n\rGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	go func() { _, _ = a.Write(in) }()
	_ = g.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len(in))
	if _, err := io.ReadFull(g, buf); err != nil {
		t.Fatalf("read after Opaque: got %v, want all %d bytes", err, len(in))
	}
}

// FuzzTracker: no panic; the verdict does not depend on how the input is
// split; safe never exceeds what was fed.
func FuzzTracker(f *testing.F) {
	for _, c := range guardCases() {
		f.Add([]byte(c.in), uint16(len(c.in)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		var whole tracker
		whole.lim = testLimits
		whole.reset()
		safe, err := whole.feed(in)
		if safe < 0 || safe > len(in) {
			t.Fatalf("safe=%d for %d bytes: want 0..%d", safe, len(in), len(in))
		}
		if err == nil && safe != len(in) {
			t.Fatalf("safe=%d without error for %d bytes: want %d", safe, len(in), len(in))
		}
		if err != nil && err.Status != 400 && err.Status != 431 {
			t.Fatalf("status %d: want 400 or 431", err.Status)
		}
		if len(in) < 2 {
			return
		}
		k := 1 + int(split)%(len(in)-1)
		r := feedChunks(t, testLimits, in[:k], in[k:])
		if got, want := verdictString(r.err), verdictString(err); got != want {
			t.Fatalf("split at %d: got %s, want %s (as when fed whole)", k, got, want)
		}
		if r.released != safe {
			t.Fatalf("split at %d: released %d, want %d (as when fed whole)", k, r.released, safe)
		}
	})
}

package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// Frame floods on HTTP/2 connections (HARDENING.md B4; CVE-2019-9512,
// -9515, -9517, -9518).
//
// x/net/http2 (v0.62, measured in hardening_h2_test.go) answers every
// SETTINGS and PING frame and bounds only the queue of answers it could
// not write (10,000), so a client that floods them while reading its
// answers, or whose answers it coalesces (SETTINGS ACKs), is served
// indefinitely; and it accepts without any bound DATA or CONTINUATION
// frames with an empty payload and WINDOW_UPDATE frames (each increment of
// 1 is legal until the window would pass 2^31-1), which cost the server a
// frame parse each and the client 9 to 13 bytes. frameWatch follows the
// frame boundaries in both directions (a 9-byte header, then the payload;
// the client's 24-byte preface first) and closes the connection, counting
// the reason in mesh_rejected_requests_total, when the client sends:
//
//   - more than maxControlFrames SETTINGS or PING frames that are not
//     acknowledgements in one second (a well-behaved peer sends a handful
//     per connection; gRPC's BDP pings stay far below);
//   - more than maxEmptyFrames consecutive DATA or CONTINUATION frames
//     with an empty payload that end nothing (DATA without END_STREAM,
//     CONTINUATION without END_HEADERS; Envoy's
//     max_consecutive_inbound_frames_with_empty_payload, whose default is
//     1; a well-behaved peer sends none: an empty DATA frame only to end
//     a stream);
//   - more WINDOW_UPDATE frames than windowUpdateAllowance: a base of
//     windowUpdateBase, plus 2 per stream it opened, plus
//     windowUpdatesPerData per DATA frame the server sent it, over the
//     connection's life (Envoy's max_inbound_window_update_frames_per_
//     data_frame_sent, default 10, with the same shape): a peer grants
//     window as it consumes what it was sent, at most a connection-level
//     and a stream-level update per DATA frame received.

const (
	// maxControlFrames bounds non-ACK SETTINGS and PING frames per second.
	maxControlFrames = 100
	// maxEmptyFrames bounds consecutive empty DATA and CONTINUATION frames
	// without END_STREAM.
	maxEmptyFrames = 100
	// windowUpdateBase and windowUpdatesPerData shape the WINDOW_UPDATE
	// allowance (see windowUpdateAllowance).
	windowUpdateBase     = 100
	windowUpdatesPerData = 10
)

// Frame types and flags frameWatch looks at (RFC 9113 §6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameSettings     = 0x4
	framePing         = 0x6
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagAck        = 0x1 // SETTINGS, PING
	flagEndStream  = 0x1 // DATA, HEADERS
	flagEndHeaders = 0x4 // HEADERS, CONTINUATION
)

var errFrameFlood = errors.New("http2: frame flood")

// frameCursor follows frame boundaries in a byte stream: what the payload
// being skipped still holds, and a header being assembled.
type frameCursor struct {
	skip int // bytes of the preface or the current payload still to pass
	hdr  [9]byte
	hn   int
}

// next consumes b up to and including the next complete frame header,
// which it returns (ok) with the rest of b; ok is false when b ran out
// first.
func (c *frameCursor) next(b []byte) (hdr *[9]byte, rest []byte, ok bool) {
	for len(b) > 0 {
		if c.skip > 0 {
			k := min(c.skip, len(b))
			c.skip -= k
			b = b[k:]
			continue
		}
		k := copy(c.hdr[c.hn:], b)
		c.hn += k
		b = b[k:]
		if c.hn < len(c.hdr) {
			return nil, b, false
		}
		c.hn = 0
		c.skip = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
		return &c.hdr, b, true
	}
	return nil, b, false
}

// frameWatch wraps a server-side HTTP/2 connection. Read runs on x/net's
// frame-reading goroutine; Write on whichever goroutine writes a frame
// (x/net writes one at a time).
type frameWatch struct {
	net.Conn
	m        *metrics
	listener string

	in    frameCursor // client → server (read side only)
	start time.Time   // current one-second window of control frames
	count int         // control frames in it
	empty int         // consecutive empty frames
	opens int64       // HEADERS frames received
	wins  int64       // WINDOW_UPDATE frames received
	flood bool

	out      frameCursor  // server → client (write side only)
	dataSent atomic.Int64 // DATA frames the server sent
}

func newFrameWatch(c net.Conn, m *metrics, listener string) net.Conn {
	w := &frameWatch{Conn: c, m: m, listener: listener}
	w.in.skip = len(h2Preface)
	if tc, ok := c.(*tls.Conn); ok {
		return &tlsFrameWatch{frameWatch: w, tc: tc}
	}
	return w
}

func (w *frameWatch) Read(p []byte) (int, error) {
	if w.flood {
		return 0, errFrameFlood
	}
	n, err := w.Conn.Read(p)
	if reason := w.scan(p[:n]); reason != "" {
		w.flood = true
		w.m.rejected.WithLabelValues(w.listener, reason).Inc()
		_ = w.Close()
		return 0, errFrameFlood
	}
	return n, err
}

func (w *frameWatch) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	b := p[:n]
	for {
		hdr, rest, ok := w.out.next(b)
		if !ok {
			break
		}
		if hdr[3] == frameData {
			w.dataSent.Add(1)
		}
		b = rest
	}
	return n, err
}

// scan follows the client's frames in b and names the flood, if any.
func (w *frameWatch) scan(b []byte) string {
	for {
		hdr, rest, ok := w.in.next(b)
		if !ok {
			return ""
		}
		b = rest
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := hdr[3], hdr[4]
		switch typ {
		case frameSettings, framePing:
			if flags&flagAck == 0 {
				now := time.Now()
				if now.Sub(w.start) > time.Second {
					w.start, w.count = now, 0
				}
				if w.count++; w.count > maxControlFrames {
					return "h2_control_flood"
				}
			}
		case frameWindowUpdate:
			if w.wins++; w.wins > w.windowUpdateAllowance() {
				return "h2_window_update_flood"
			}
		case frameHeaders:
			w.opens++
		}
		// An empty frame that ends something (a DATA frame its stream, a
		// CONTINUATION frame its header block) is legitimate; any other
		// flag is meaningless on it and must not exempt it.
		if length == 0 && (typ == frameData && flags&flagEndStream == 0 || typ == frameContinuation && flags&flagEndHeaders == 0) {
			if w.empty++; w.empty > maxEmptyFrames {
				return "h2_empty_frame_flood"
			}
		} else {
			w.empty = 0
		}
	}
}

// windowUpdateAllowance is how many WINDOW_UPDATE frames the client may
// have sent by now.
func (w *frameWatch) windowUpdateAllowance() int64 {
	return windowUpdateBase + 2*w.opens + windowUpdatesPerData*w.dataSent.Load()
}

// tlsFrameWatch keeps the TLS connection state visible to the HTTP/2
// server (it checks the TLS version and cipher).
type tlsFrameWatch struct {
	*frameWatch
	tc *tls.Conn
}

func (w *tlsFrameWatch) ConnectionState() tls.ConnectionState { return w.tc.ConnectionState() }

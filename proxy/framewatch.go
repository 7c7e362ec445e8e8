package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"time"
)

// Control-frame floods on HTTP/2 connections.
//
// x/net/http2 answers every SETTINGS and PING frame and bounds only the
// queue of answers it could not write, so a client that floods them while
// reading its answers (or whose answers x/net coalesces, as SETTINGS ACKs
// are) is served indefinitely. frameWatch follows the frame boundaries of
// what the client sends (a 9-byte header, then the payload, after the
// 24-byte preface) and closes the connection when SETTINGS or PING frames
// that are not acknowledgements arrive faster than maxControlFrames per
// second: a well-behaved peer sends a handful per connection.

// maxControlFrames bounds non-ACK SETTINGS and PING frames per second.
const maxControlFrames = 100

var errControlFlood = errors.New("http2: SETTINGS or PING flood")

type frameWatch struct {
	net.Conn
	m *metrics

	skip  int // bytes of the preface or the current payload still to pass
	hdr   [9]byte
	hn    int
	start time.Time // current one-second window
	count int
	flood bool
}

func newFrameWatch(c net.Conn, m *metrics) net.Conn {
	w := &frameWatch{Conn: c, m: m, skip: len(h2Preface)}
	if tc, ok := c.(*tls.Conn); ok {
		return &tlsFrameWatch{frameWatch: w, tc: tc}
	}
	return w
}

func (w *frameWatch) Read(p []byte) (int, error) {
	if w.flood {
		return 0, errControlFlood
	}
	n, err := w.Conn.Read(p)
	if w.scan(p[:n]) {
		w.flood = true
		w.m.rejected.WithLabelValues("inbound", "h2_control_flood").Inc()
		_ = w.Close()
		return 0, errControlFlood
	}
	return n, err
}

// scan follows frame boundaries in b and reports a flood.
func (w *frameWatch) scan(b []byte) bool {
	for len(b) > 0 {
		if w.skip > 0 {
			k := min(w.skip, len(b))
			w.skip -= k
			b = b[k:]
			continue
		}
		k := copy(w.hdr[w.hn:], b)
		w.hn += k
		b = b[k:]
		if w.hn < len(w.hdr) {
			return false
		}
		w.hn = 0
		w.skip = int(w.hdr[0])<<16 | int(w.hdr[1])<<8 | int(w.hdr[2])
		typ, flags := w.hdr[3], w.hdr[4]
		const settings, ping, ack = 0x4, 0x6, 0x1
		if (typ == settings || typ == ping) && flags&ack == 0 {
			now := time.Now()
			if now.Sub(w.start) > time.Second {
				w.start, w.count = now, 0
			}
			w.count++
			if w.count > maxControlFrames {
				return true
			}
		}
	}
	return false
}

// tlsFrameWatch keeps the TLS connection state visible to the HTTP/2
// server (it checks the TLS version and cipher).
type tlsFrameWatch struct {
	*frameWatch
	tc *tls.Conn
}

func (w *tlsFrameWatch) ConnectionState() tls.ConnectionState { return w.tc.ConnectionState() }

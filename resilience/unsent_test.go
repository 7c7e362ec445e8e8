package resilience

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// rawH2Server is a minimal HTTP/2 server on 127.0.0.1 that completes the
// connection preface and hands each request's HEADERS frame to onHeaders,
// which answers with whatever frames the test needs.
func rawH2Server(t *testing.T, onHeaders func(fr *http2.Framer, streamID uint32) (hangUp bool)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serveRawH2(c, onHeaders)
			}()
		}
	}()
	return ln.Addr().String()
}

func serveRawH2(c net.Conn, onHeaders func(fr *http2.Framer, streamID uint32) (hangUp bool)) {
	br := bufio.NewReader(c)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fr := http2.NewFramer(c, br)
	if err := fr.WriteSettings(); err != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return
				}
			}
		case *http2.HeadersFrame:
			if onHeaders(fr, f.StreamID) {
				return
			}
		}
	}
}

func h2cTransport() *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// postWithBody returns a POST whose body cannot be rewound (no GetBody), as
// a proxied request's body is.
func postWithBody(ctx context.Context, t *testing.T, addr string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/svc", io.NopCloser(strings.NewReader("payload")))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// roundTrip runs one request and returns its error; a response fails the
// test.
func roundTrip(t *testing.T, rt http.RoundTripper, req *http.Request) error {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got response %d, want an error", resp.StatusCode)
	}
	return err
}

func TestNeverReachedUpstreamRealTransports(t *testing.T) {
	tests := []struct {
		name      string
		run       func(ctx context.Context, t *testing.T) error
		wantUnset bool
		wantKind  Kind
	}{
		{
			name: "h2 transport, closed port",
			run: func(ctx context.Context, t *testing.T) error {
				return roundTrip(t, h2cTransport(), postWithBody(ctx, t, closedPort(t)))
			},
			wantUnset: true, wantKind: KindConnectFailure,
		},
		{
			name: "h1 transport, closed port",
			run: func(ctx context.Context, t *testing.T) error {
				return roundTrip(t, &http.Transport{}, postWithBody(ctx, t, closedPort(t)))
			},
			wantUnset: true, wantKind: KindConnectFailure,
		},
		{
			name: "h2 transport, RST_STREAM(REFUSED_STREAM)",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(fr *http2.Framer, id uint32) bool {
					fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
					return false
				})
				return roundTrip(t, h2cTransport(), postWithBody(ctx, t, addr))
			},
			wantUnset: true, wantKind: KindRefusedStream,
		},
		{
			name: "h2 client conn, RST_STREAM(REFUSED_STREAM)",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(fr *http2.Framer, id uint32) bool {
					fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
					return false
				})
				return roundTrip(t, clientConn(ctx, t, addr), postWithBody(ctx, t, addr))
			},
			wantUnset: true, wantKind: KindRefusedStream,
		},
		{
			name: "h2 transport, GOAWAY below the stream",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(fr *http2.Framer, id uint32) bool { fr.WriteGoAway(id-1, http2.ErrCodeNo, nil); return false })
				return roundTrip(t, h2cTransport(), postWithBody(ctx, t, addr))
			},
			wantUnset: true, wantKind: KindRefusedStream,
		},
		{
			name: "h2 client conn, GOAWAY below the stream",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(fr *http2.Framer, id uint32) bool { fr.WriteGoAway(id-1, http2.ErrCodeNo, nil); return false })
				return roundTrip(t, clientConn(ctx, t, addr), postWithBody(ctx, t, addr))
			},
			wantUnset: true, wantKind: KindRefusedStream,
		},
		{
			name: "h2 client conn, GOAWAY with error below the first stream",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(fr *http2.Framer, id uint32) bool {
					fr.WriteGoAway(id-1, http2.ErrCodeEnhanceYourCalm, nil)
					return false
				})
				return roundTrip(t, clientConn(ctx, t, addr), postWithBody(ctx, t, addr))
			},
			wantUnset: true, wantKind: KindRefusedStream,
		},
		{
			name: "h2 transport, GOAWAY covering the stream then close",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(fr *http2.Framer, id uint32) bool {
					fr.WriteGoAway(id, http2.ErrCodeNo, nil)
					return true // the server received the stream, then went away
				})
				return roundTrip(t, h2cTransport(), postWithBody(ctx, t, addr))
			},
			wantUnset: false, wantKind: KindReset,
		},
		{
			name: "h2 transport, RST_STREAM(INTERNAL_ERROR)",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(fr *http2.Framer, id uint32) bool { fr.WriteRSTStream(id, http2.ErrCodeInternal); return false })
				return roundTrip(t, h2cTransport(), postWithBody(ctx, t, addr))
			},
			wantUnset: false, wantKind: KindReset,
		},
		{
			name: "h2 transport, GET, per-try deadline",
			run: func(ctx context.Context, t *testing.T) error {
				addr := rawH2Server(t, func(*http2.Framer, uint32) bool { return false }) // never answers
				ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
				return roundTrip(t, h2cTransport(), req)
			},
			wantUnset: false, wantKind: KindTimeout,
		},
		{
			name: "h1 transport, connection closed after the request",
			run: func(ctx context.Context, t *testing.T) error {
				addr := closingH1Server(t)
				return roundTrip(t, &http.Transport{}, postWithBody(ctx, t, addr))
			},
			wantUnset: false, wantKind: KindReset,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := tt.run(ctx, t)
			if got := NeverReachedUpstream(err); got != tt.wantUnset {
				t.Errorf("NeverReachedUpstream(%v) = %v, want %v", err, got, tt.wantUnset)
			}
			res := Classify(Attempt{Err: err})
			if res.Kind != tt.wantKind || res.Outcome != Failure || res.Unsent != tt.wantUnset {
				t.Errorf("Classify(%v) = %+v, want kind %v, failure, unsent %v", err, res, tt.wantKind, tt.wantUnset)
			}
		})
	}
}

// clientConn returns an x/net/http2 ClientConn on a new connection to
// addr: its RoundTrip returns errors without the Transport's retry wrapper.
func clientConn(ctx context.Context, t *testing.T, addr string) *http2.ClientConn {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := h2cTransport().NewClientConn(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// closingH1Server reads one request head and closes the connection
// without answering.
func closingH1Server(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = http.ReadRequest(bufio.NewReader(c))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestNeverReachedUpstreamValues(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset")}, false},
		{http2.StreamError{StreamID: 1, Code: http2.ErrCodeRefusedStream}, true},
		{http2.StreamError{StreamID: 1, Code: http2.ErrCodeCancel}, false},
		{http2.GoAwayError{LastStreamID: 5, ErrCode: http2.ErrCodeNo}, false},
		{context.DeadlineExceeded, false},
		{io.ErrUnexpectedEOF, false},
	}
	for _, tt := range tests {
		if got := NeverReachedUpstream(tt.err); got != tt.want {
			t.Errorf("NeverReachedUpstream(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

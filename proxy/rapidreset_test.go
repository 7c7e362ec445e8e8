package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// TestRapidResetClosesConnection opens HTTP/2 streams and resets each at
// once (CVE-2023-44487). The sidecar must close the connection after a
// bounded number of streams, forward few of them, and keep serving others.
func TestRapidResetClosesConnection(t *testing.T) {
	var seen atomic.Int64
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		w.WriteHeader(200)
	}))
	s := startSidecar(t, testConfig("echo", app, config.ProtocolHTTP1))

	c, err := net.DialTimeout("tcp", s.addr("inbound"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "echo"}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hbuf.Bytes()

	// Read frames in the background until the server closes the connection.
	closed := make(chan error, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				closed <- err
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				closed <- errors.New("GOAWAY " + ga.ErrCode.String())
				return
			}
		}
	}()
	const attempts = 5000
	sent := 0
	for id := uint32(1); sent < attempts; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
			break // the server closed the connection
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		sent++
	}
	var closeErr error
	select {
	case closeErr = <-closed:
		t.Logf("connection closed after %d streams sent: %v", sent, closeErr)
	case <-time.After(10 * time.Second):
		t.Fatalf("connection still open 10s after %d reset streams", sent)
	}
	// How many frames the client managed to write says little (loopback
	// buffers absorb thousands); what matters is that the sidecar's rule
	// closed the connection and forwarded (almost) none of the streams.
	t.Logf("the app received %d requests; abusive-reset closes: %v", seen.Load(), testutilCounter(s.m.h2Resets))
	// Either defence may act first: the premature-reset rule (counted), or
	// x/net/http2's own cap on queued handlers (GOAWAY ENHANCE_YOUR_CALM).
	if got := testutilCounter(s.m.h2Resets); got != 1 && !strings.Contains(closeErr.Error(), "ENHANCE_YOUR_CALM") {
		t.Errorf("closed by %v with abusive-reset closes = %v; want the premature-reset rule or GOAWAY ENHANCE_YOUR_CALM", closeErr, got)
	}
	if n := seen.Load(); n > 1000 {
		t.Errorf("the app received %d of the reset requests, want at most 1000", n)
	}
	// A well-behaved client is still served.
	resp, _ := get(t, h2cClient(), "http://"+s.addr("inbound")+"/", "echo")
	if resp.StatusCode != 200 {
		t.Errorf("well-behaved client got %d", resp.StatusCode)
	}
}

func testutilCounter(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

package proxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// TestPartialBodyReachesClient: a response with a Content-Length whose
// first half is sent before the upstream waits for the client to see it
// (a request-response exchange inside one body) reaches the client
// across the mesh hop at once, not when the rest arrives.
func TestPartialBodyReachesClient(t *testing.T) {
	seen := make(chan struct{})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		_, _ = io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		select {
		case <-seen:
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		_, _ = io.WriteString(w, "-last")
	}))
	m := startMesh(t, "halves", app, config.ProtocolHTTP1)
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", h1Client()}, {"h2c", h2cClient()}} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(testContext(t, 8*time.Second), "GET", "http://"+m.client.addr("outbound")+"/", nil)
			req.Host = "halves"
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			buf := make([]byte, 5)
			start := time.Now()
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
				t.Fatalf("first half: %q, %v", buf, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the first half took %v: it waited for the rest", d)
			}
			select {
			case seen <- struct{}{}:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream no longer waits")
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != "-last" {
				t.Fatalf("second half: %q, %v", rest, err)
			}
		})
	}
}

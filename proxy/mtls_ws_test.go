package proxy

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/identity"
)

// TestWebSocketOverMutualTLS: an upgrade crosses a strict mutual-TLS hop
// on a connection of its own (ALPN http/1.1), and the app learns the
// verified caller as it does for HTTP/2 requests.
func TestWebSocketOverMutualTLS(t *testing.T) {
	authority, err := ca.LoadOrCreate(t.TempDir(), testTrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	peers := make(chan string, 1)
	app := http.NewServeMux()
	app.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) {
		peers <- ws.Request().Header.Get(HeaderPeerIdentity)
		var msg string
		for websocket.Message.Receive(ws, &msg) == nil {
			if websocket.Message.Send(ws, msg) != nil {
				return
			}
		}
	}))
	client, _ := mtlsPair(t, app, meshCredentials(t, authority, "orders"), identity.ModeStrict, meshCredentials(t, authority, "web"))

	cfg, err := websocket.NewConfig("ws://orders/ws", "http://orders/")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 10*time.Second)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", client.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket handshake across a strict mutual-TLS hop: %v", err)
	}
	select {
	case got := <-peers:
		if got != "spiffe://"+testTrustDomain+"/ns/default/sa/web" {
			t.Errorf("the app saw caller %q, want the verified spiffe://%s/ns/default/sa/web", got, testTrustDomain)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the app never got the upgrade")
	}
	for i := range 5 {
		msg := fmt.Sprintf("hello-%d", i)
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
}

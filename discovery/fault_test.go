package discovery

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// network is a set of real loopback transports with a switchboard that can
// cut any directed link: packets across a cut are dropped (like UDP on a
// broken network) and stream dials fail after their timeout. Wrapping
// memberlist's NetTransport this way proved reliable where its
// MockNetwork stalled (LIBRARIES.md §3).
type network struct {
	mu      sync.Mutex
	names   map[string]string // gossip address → node name
	blocked map[[2]string]bool
}

func newNetwork() *network {
	return &network{names: map[string]string{}, blocked: map[[2]string]bool{}}
}

var errPartitioned = errors.New("partitioned")

// cut blocks traffic from → to (one direction).
func (n *network) cut(from, to string) {
	n.mu.Lock()
	n.blocked[[2]string{from, to}] = true
	n.mu.Unlock()
}

// split cuts every link between the two groups, both ways.
func (n *network) split(a, b []string) {
	for _, x := range a {
		for _, y := range b {
			n.cut(x, y)
			n.cut(y, x)
		}
	}
}

// heal restores every link.
func (n *network) heal() {
	n.mu.Lock()
	n.blocked = map[[2]string]bool{}
	n.mu.Unlock()
}

func (n *network) isBlocked(from, toAddr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blocked[[2]string{from, n.names[toAddr]}]
}

// transport creates a loopback transport for node name.
func (n *network) transport(name string) (*faultTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", itoa(nt.GetAutoBindPort()))
	n.mu.Lock()
	n.names[addr] = name
	n.mu.Unlock()
	return &faultTransport{NetTransport: nt, net: n, self: name, addr: addr}, nil
}

type faultTransport struct {
	*memberlist.NetTransport
	net  *network
	self string
	addr string
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.net.isBlocked(t.self, a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	if t.net.isBlocked(t.self, a.Addr) {
		time.Sleep(min(d, 200*time.Millisecond))
		return nil, errPartitioned
	}
	return t.NetTransport.DialAddressTimeout(a, d)
}

func (t *faultTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, d)
}

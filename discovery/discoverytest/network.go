// Package discoverytest provides a gossip network for tests that can cut
// links between members: real loopback transports (memberlist's
// NetTransport) behind a switchboard. Packets across a cut are dropped, as
// UDP on a broken network, and stream dials fail after a short wait.
// Wrapping NetTransport this way proved reliable where memberlist's
// MockNetwork stalled (LIBRARIES.md §3).
package discoverytest

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Network is the switchboard. The zero value is not usable; use
// NewNetwork.
type Network struct {
	mu      sync.Mutex
	names   map[string]string // gossip address → member name
	blocked map[[2]string]bool
}

// NewNetwork returns a network with every link up.
func NewNetwork() *Network {
	return &Network{names: map[string]string{}, blocked: map[[2]string]bool{}}
}

// ErrPartitioned is what a dial across a cut returns.
var ErrPartitioned = errors.New("partitioned")

// Cut blocks traffic from → to (one direction), by member name.
func (n *Network) Cut(from, to string) {
	n.mu.Lock()
	n.blocked[[2]string{from, to}] = true
	n.mu.Unlock()
}

// Restore unblocks traffic from → to.
func (n *Network) Restore(from, to string) {
	n.mu.Lock()
	delete(n.blocked, [2]string{from, to})
	n.mu.Unlock()
}

// Split cuts every link between the two groups, both ways.
func (n *Network) Split(a, b []string) {
	for _, x := range a {
		for _, y := range b {
			n.Cut(x, y)
			n.Cut(y, x)
		}
	}
}

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	n.blocked = map[[2]string]bool{}
	n.mu.Unlock()
}

// Blocked reports whether traffic from → to is cut.
func (n *Network) Blocked(from, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blocked[[2]string{from, to}]
}

func (n *Network) blockedAddr(from, toAddr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blocked[[2]string{from, n.names[toAddr]}]
}

// Transport creates a loopback transport for member name on a free port.
func (n *Network) Transport(name string) (*Transport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort()))
	n.mu.Lock()
	n.names[addr] = name
	n.mu.Unlock()
	return &Transport{NetTransport: nt, net: n, self: name, addr: addr}, nil
}

// Transport is one member's transport on the network.
type Transport struct {
	*memberlist.NetTransport
	net  *Network
	self string
	addr string
}

// Addr is the transport's gossip HOST:PORT.
func (t *Transport) Addr() string { return t.addr }

// WriteToAddress drops packets across a cut.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.net.blockedAddr(t.self, a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

// WriteTo drops packets across a cut.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// DialAddressTimeout fails across a cut, after a short wait as a dead
// network would.
func (t *Transport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	if t.net.blockedAddr(t.self, a.Addr) {
		time.Sleep(min(d, 200*time.Millisecond))
		return nil, ErrPartitioned
	}
	return t.NetTransport.DialAddressTimeout(a, d)
}

// DialTimeout fails across a cut.
func (t *Transport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, d)
}

package discovery

import (
	"bytes"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate supplies this member's metadata. memberlist calls it from its
// own goroutines; it never blocks.
type delegate struct{ a *Agent }

func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.a.meta.Load()
	if len(b) > limit {
		return nil // Encode already refused oversize metadata
	}
	return b
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// eventDelegate receives membership changes. memberlist calls it while
// holding its node lock, so it copies what it needs and queues it without
// blocking; if the queue is full (a burst of more than its capacity before
// the loop catches up) the event is dropped and counted.
type eventDelegate struct{ a *Agent }

// pingDelegate hears every probe this member's own probes got answered
// directly, which clears its suspicion of the peer.
type pingDelegate struct{ a *Agent }

func (p *pingDelegate) AckPayload() []byte { return nil }

func (p *pingDelegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	if _, suspected := p.a.suspected.Load(other.Name); suspected {
		p.a.suspected.Delete(other.Name)
		p.a.enqueue(event{kind: evAck, name: other.Name, stamp: time.Now()})
	}
}

// suspect records that this member's probe of node failed.
func (a *Agent) suspect(node string) {
	a.suspected.Store(node, struct{}{})
	a.enqueue(event{kind: evSuspect, name: node, stamp: time.Now()})
}

func (e *eventDelegate) push(kind eventKind, n *memberlist.Node) {
	ev := event{kind: kind, name: n.Name, addr: hostPort(n.Addr, n.Port), meta: bytes.Clone(n.Meta),
		stamp: time.Now()} // n.State is never set in v0.7.0: left versus failed comes from our metadata (Agent.Leave)
	e.a.enqueue(ev)
}

// enqueue hands ev to the agent's loop without blocking; a full queue
// drops and counts it.
func (a *Agent) enqueue(ev event) {
	select {
	case a.events <- ev:
	default:
		a.counters.DroppedEvents.Add(1)
	}
}

func (e *eventDelegate) NotifyJoin(n *memberlist.Node)   { e.push(evJoin, n) }
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.push(evUpdate, n) }
func (e *eventDelegate) NotifyLeave(n *memberlist.Node)  { e.push(evLeave, n) }

// countingTransport counts gossip bytes in both directions. Incoming
// packets and streams are forwarded through its own channels by one
// goroutine, which ends at Shutdown.
type countingTransport struct {
	memberlist.NodeAwareTransport
	c       *Counters
	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{}
	once    sync.Once
}

func newCountingTransport(inner memberlist.NodeAwareTransport, c *Counters) *countingTransport {
	t := &countingTransport{NodeAwareTransport: inner, c: c, packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn), stop: make(chan struct{})}
	go t.forward()
	return t
}

func (t *countingTransport) forward() {
	in, sin := t.NodeAwareTransport.PacketCh(), t.NodeAwareTransport.StreamCh()
	for {
		select {
		case p := <-in:
			t.c.BytesReceived.Add(uint64(len(p.Buf)))
			select {
			case t.packets <- p:
			case <-t.stop:
				return
			}
		case conn := <-sin:
			select {
			case t.streams <- &countingConn{Conn: conn, c: t.c}:
			case <-t.stop:
				conn.Close()
				return
			}
		case <-t.stop:
			return
		}
	}
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *countingTransport) StreamCh() <-chan net.Conn           { return t.streams }

// Shutdown stops forwarding and shuts the inner transport down. Its
// listener goroutines may be blocked handing over a packet or connection,
// and its Shutdown waits for them, so whatever they still deliver is
// drained (and dropped) until it returns.
func (t *countingTransport) Shutdown() error {
	t.once.Do(func() { close(t.stop) })
	done := make(chan struct{})
	go func() {
		in, sin := t.NodeAwareTransport.PacketCh(), t.NodeAwareTransport.StreamCh()
		for {
			select {
			case <-in:
			case c := <-sin:
				c.Close()
			case <-done:
				return
			}
		}
	}()
	err := t.NodeAwareTransport.Shutdown()
	close(done)
	return err
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.c.BytesSent.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	t.c.BytesSent.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteToAddress(b, addr)
}

func (t *countingTransport) DialAddressTimeout(addr memberlist.Address, d time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialAddressTimeout(addr, d)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, c: t.c}, nil
}

func (t *countingTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, d)
}

// countingConn counts a stream connection's bytes.
type countingConn struct {
	net.Conn
	c *Counters
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.BytesReceived.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.BytesSent.Add(uint64(n))
	return n, err
}

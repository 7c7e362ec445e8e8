package discovery

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// State is a member's state as this agent sees it.
type State string

// Member states. Memberlist keeps its suspicion internal; Member.Suspect
// reports this agent's own: its probes of an alive member went unanswered
// (directly and through others) and none has been answered since.
const (
	StateAlive  State = "alive"
	StateFailed State = "failed" // crashed or unreachable: retried, counted, reaped after ReapAfter
	StateLeft   State = "left"   // stopped gracefully: not counted
)

// Member is one member of the pool.
type Member struct {
	Name       string    `json:"node"`
	GossipAddr string    `json:"gossipAddress"`
	Meta       Meta      `json:"-"`
	MetaErr    string    `json:"metaError,omitempty"`
	State      State     `json:"state"`
	Since      time.Time `json:"since"`
	// Suspect is true while this agent's probes of an alive member fail;
	// it is not routed to, and counts as unreachable for the quorum.
	Suspect bool `json:"suspect,omitempty"`
}

// Endpoint is one routable instance of a service.
type Endpoint struct {
	Node        string
	Addr        string // the member's inbound HOST:PORT
	Protocol    string
	Zone        string
	Version     string
	Weight      uint32
	Incarnation uint64
}

// Snapshot is an immutable view of the pool: live, ready endpoints by
// service, and counts for the cluster-size arithmetic fencing needs. The
// counts cover serving members only: a watch-only member (empty
// Meta.Service, such as the control plane) is listed by Agent.Members but
// never counted, so it does not change any quorum.
type Snapshot struct {
	Services map[string][]Endpoint
	Alive    int // alive members, this one included
	Suspect  int // alive members this agent suspects (a subset of Alive)
	Failed   int // failed members not yet reaped (counted toward the size)
	Left     int // members that left (not counted)
	Version  uint64
}

type eventKind int

const (
	evJoin eventKind = iota
	evUpdate
	evLeave
	evSuspect // this agent's probe of the member failed
	evAck     // this agent's probe of the member was answered
)

// event is a copy of what memberlist reported, taken while memberlist held
// its lock.
type event struct {
	kind  eventKind
	name  string
	addr  string
	meta  []byte
	stamp time.Time
}

// loop owns the member table: it applies events, coalesces bursts,
// publishes snapshots and reaps members.
func (a *Agent) loop(ctx context.Context) {
	var (
		dirty      bool
		firstDirty time.Time
		version    uint64
		quiet      = time.NewTimer(time.Hour)
		reap       = time.NewTicker(time.Second)
	)
	defer quiet.Stop()
	defer reap.Stop()
	publish := func() {
		version++
		s := a.buildSnapshot(version)
		a.snap.Store(s)
		if a.cfg.OnChange != nil {
			a.cfg.OnChange(s)
		}
		dirty = false
	}
	publish() // the empty view, with this member alone
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-a.events:
			a.apply(ev)
			now := time.Now()
			if !dirty {
				dirty, firstDirty = true, now
			}
			// Publish once changes are quiet for CoalesceMin, but never
			// later than CoalesceMax after the first.
			wait := min(a.cfg.CoalesceMin, a.cfg.CoalesceMax-now.Sub(firstDirty))
			quiet.Reset(max(wait, 0))
		case <-quiet.C:
			if dirty {
				publish()
			}
		case now := <-reap.C:
			if a.reap(now) {
				publish()
			}
		}
	}
}

func (a *Agent) apply(ev event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.members[ev.name]
	switch ev.kind {
	case evSuspect, evAck:
		if m != nil && m.State == StateAlive && m.Suspect != (ev.kind == evSuspect) {
			m.Suspect = ev.kind == evSuspect
			if m.Suspect {
				a.cfg.Logger.Warn("member suspected: probes unanswered", "node", ev.name)
			} else {
				a.cfg.Logger.Info("suspected member answers again", "node", ev.name)
			}
		}
		return
	}
	if m == nil {
		m = &Member{Name: ev.name}
		a.members[ev.name] = m
	}
	m.GossipAddr = ev.addr
	switch ev.kind {
	case evJoin, evUpdate:
		if ev.kind == evJoin || m.State != StateAlive {
			a.counters.Joins.Add(1)
			m.Since = ev.stamp
		}
		m.State = StateAlive
		meta, err := DecodeMeta(ev.meta)
		m.Meta, m.MetaErr = meta, ""
		if err != nil {
			m.MetaErr = err.Error()
			a.cfg.Logger.Warn("member with unreadable metadata is not routed to", "node", ev.name, "error", err)
		}
	case evLeave:
		m.Since = ev.stamp
		m.Suspect = false
		if m.Meta.Leaving {
			m.State = StateLeft
			a.counters.Leaves.Add(1)
			a.cfg.Logger.Info("member left", "node", ev.name)
		} else {
			m.State = StateFailed
			a.counters.Failures.Add(1)
			a.cfg.Logger.Warn("member failed", "node", ev.name, "address", ev.addr)
		}
	}
}

// reap forgets failed members after ReapAfter and left ones after
// TombstoneAfter. It reports whether anything changed.
func (a *Agent) reap(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	for name, m := range a.members {
		if (m.State == StateFailed && now.Sub(m.Since) > a.cfg.ReapAfter) ||
			(m.State == StateLeft && now.Sub(m.Since) > a.cfg.TombstoneAfter) {
			delete(a.members, name)
			changed = true
		}
	}
	return changed
}

func (a *Agent) buildSnapshot(version uint64) *Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := &Snapshot{Services: map[string][]Endpoint{}, Version: version}
	for _, m := range a.members {
		if !m.serving() {
			continue // a watch-only member (the control plane) is no part of the quorum
		}
		switch m.State {
		case StateAlive:
			s.Alive++
			if m.Suspect {
				s.Suspect++
			}
			// A member this agent suspects is not routed to: its probes go
			// unanswered, so requests would hang until they time out.
			if m.MetaErr == "" && m.Meta.Service != "" && m.Meta.Ready && m.Meta.Inbound != "" && !m.Suspect {
				s.Services[m.Meta.Service] = append(s.Services[m.Meta.Service], Endpoint{
					Node: m.Name, Addr: m.Meta.Inbound, Protocol: m.Meta.Protocol, Zone: m.Meta.Zone,
					Version: m.Meta.Version, Weight: m.Meta.Weight, Incarnation: m.Meta.Incarnation,
				})
			}
		case StateFailed:
			s.Failed++
		case StateLeft:
			s.Left++
		}
	}
	for _, eps := range s.Services {
		slices.SortFunc(eps, func(x, y Endpoint) int { return strings.Compare(x.Addr, y.Addr) })
	}
	return s
}

// serving reports whether m counts toward the cluster size: every member
// except a watch-only one, which announces no service. A member whose
// metadata cannot be read counts: it may well be serving.
func (m *Member) serving() bool { return m.MetaErr != "" || m.Meta.Service != "" }

// Members returns every known member, this one included, sorted by name.
func (a *Agent) Members() []Member {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Member, 0, len(a.members))
	for _, m := range a.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(x, y Member) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func hostPort(ip net.IP, port uint16) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}

package membership

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/causeway-mesh/causeway/discovery"
)

func TestFromMembers(t *testing.T) {
	m := func(name string, st discovery.State, meta discovery.Meta) discovery.Member {
		return discovery.Member{Name: name, State: st, Meta: meta}
	}
	in := []discovery.Member{
		m("cp", discovery.StateAlive, discovery.Meta{}), // watch-only: not an instance
		m("b-ready", discovery.StateAlive, discovery.Meta{Service: "b", Inbound: "10.0.0.2:15006", Ready: true, Weight: 3, Zone: "z1"}),
		m("b-unready", discovery.StateAlive, discovery.Meta{Service: "b", Inbound: "10.0.0.3:15006"}),
		m("b-leaving", discovery.StateAlive, discovery.Meta{Service: "b", Inbound: "10.0.0.4:15006", Ready: true, Leaving: true}),
		m("a-failed", discovery.StateFailed, discovery.Meta{Service: "a", Inbound: "10.0.0.1:15006", Ready: true}),
		m("a-left", discovery.StateLeft, discovery.Meta{Service: "a", Inbound: "10.0.0.9:15006", Ready: true}),
		{Name: "a-garbled", State: discovery.StateAlive, MetaErr: "truncated", Meta: discovery.Meta{Service: "a", Inbound: "10.0.0.8:15006"}},
	}
	want := []Instance{
		{Node: "a-failed", Service: "a", Addr: "10.0.0.1:15006", Weight: 1, Health: Unhealthy},
		{Node: "b-ready", Service: "b", Addr: "10.0.0.2:15006", Zone: "z1", Weight: 3, Health: Healthy},
		{Node: "b-unready", Service: "b", Addr: "10.0.0.3:15006", Weight: 1, Health: Draining},
		{Node: "b-leaving", Service: "b", Addr: "10.0.0.4:15006", Weight: 1, Health: Draining},
	}
	if diff := cmp.Diff(want, FromMembers(in)); diff != "" {
		t.Errorf("FromMembers (-want +got):\n%s", diff)
	}
}

package membership

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/discovery"
)

// TestWatcherSeesSidecars: the control plane joins the pool as a
// watch-only member and learns a sidecar's instance; the sidecar does not
// route to the watcher.
func TestWatcherSeesSidecars(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sidecar, err := discovery.New(discovery.Config{NodeName: "orders-1", Bind: "127.0.0.1:0"},
		discovery.Meta{Service: "orders", Inbound: "127.0.0.1:15006", Ready: true, Zone: "z1", Weight: 2})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	sdone := make(chan struct{})
	go func() { _ = sidecar.Run(sctx); close(sdone) }()
	defer func() { scancel(); <-sdone }()

	var changes atomic.Int64
	w, err := NewWatcher(WatcherConfig{NodeName: "controlplane", Bind: "127.0.0.1:0", Join: []string{sidecar.Addr()},
		OnChange: func() { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() { _ = w.Run(wctx); close(wdone) }()
	defer func() { wcancel(); <-wdone }()

	for {
		is := w.Instances()
		if len(is) == 1 && is[0].Node == "orders-1" && is[0].Health == Healthy && is[0].Weight == 2 && is[0].Zone == "z1" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the watcher never saw the sidecar: %+v", w.Instances())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if changes.Load() == 0 {
		t.Error("OnChange was not called")
	}
	// The sidecar lists the watcher as a member but does not route to it
	// or count it toward the quorum: it serves no service.
	sawWatcher := func() bool {
		for _, m := range sidecar.Members() {
			if m.Name == "controlplane" && m.State == discovery.StateAlive {
				return true
			}
		}
		return false
	}
	for {
		if eps := sidecar.Snapshot().Services; len(eps) == 1 && len(eps["orders"]) == 1 && sidecar.Snapshot().Alive == 1 && sawWatcher() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the sidecar's view: %+v", sidecar.Snapshot())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

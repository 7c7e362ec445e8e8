//go:build netns && linux

package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvcheck"
	"github.com/causeway-mesh/causeway/examples/kv/replication"
)

// convergeBound is how long after the last heal (and the last client
// write) the replicas get to deliver everything they queued and hold the
// same values. After a long cut a peer's queue holds up to 1,024 writes,
// delivered one at a time once the peer's fencing lifts (5-9 s after the
// heal): 18 s was measured on a loaded 2-core machine, hence the margin.
const convergeBound = 60 * time.Second

// replicationStatus returns node's kv app's GET /replication, read
// directly from the app.
func (m *mesh) replicationStatus(ctx context.Context, node string) (replication.Status, error) {
	var s replication.Status
	err := m.getJSON(ctx, node, "http://"+kvAddr+"/replication", &s)
	return s, err
}

// dump returns node's kv app's GET /kv?dump=1, read directly from the app.
func (m *mesh) dump(ctx context.Context, node string) (map[string]string, error) {
	var d map[string]string
	err := m.getJSON(ctx, node, "http://"+kvAddr+"/kv?dump=1", &d)
	return d, err
}

// converged reports nil when no replica has anything left to send and all
// hold the same values, and otherwise what is still missing.
func (m *mesh) converged(ctx context.Context) error {
	var first map[string]string
	for i, n := range m.nodes {
		s, err := m.replicationStatus(ctx, n)
		if err != nil {
			return err
		}
		for _, p := range s.Peers {
			if !p.Idle() {
				return fmt.Errorf("%s still has %d writes for %s (sync due %v, last error %q)", n, p.Queued, p.Peer, p.NeedsSync, p.LastError)
			}
		}
		d, err := m.dump(ctx, n)
		if err != nil {
			return err
		}
		if i == 0 {
			first = d
		} else if !maps.Equal(d, first) {
			return fmt.Errorf("%s holds other values than %s", n, m.nodes[0])
		}
	}
	return nil
}

// waitConverged polls converged every 100 ms until it holds or ctx ends.
func (m *mesh) waitConverged(ctx context.Context) error {
	var last error
	for {
		if last = m.converged(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %w", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// replicationLog renders every node's GET /replication for a failure
// message.
func (m *mesh) replicationLog(ctx context.Context) string {
	out := ""
	for _, n := range m.nodes {
		s, err := m.replicationStatus(ctx, n)
		if err != nil {
			out += fmt.Sprintf("\n%s: %v", n, err)
			continue
		}
		b, _ := json.Marshal(s)
		out += fmt.Sprintf("\n%s: %s", n, b)
	}
	return out
}

// checkConvergence waits (within convergeBound) until the replicas have
// converged, logs how long that took after since (what the caller names
// it), then checks their final values against every history and the
// clients' attempts (kvcheck.CheckConvergence). It returns how long the
// wait took, and reports failures on t.
func (m *mesh) checkConvergence(t *testing.T, since time.Time, what string, attempts []kvcheck.Attempt) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), convergeBound)
	defer cancel()
	start := time.Now()
	if err := m.waitConverged(ctx); err != nil {
		lctx, lcancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer lcancel()
		t.Errorf("replicas did not converge within %v: %v (logs in %s); replication:%s", convergeBound, err, m.dir, m.replicationLog(lctx))
		return time.Since(start)
	}
	took := time.Since(start)
	t.Logf("replicas converged %v after %s (%v after the wait began)", time.Since(since).Round(time.Millisecond), what, took.Round(time.Millisecond))

	hctx, hcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer hcancel()
	history, err := m.histories(hctx)
	if err != nil {
		t.Fatal(err)
	}
	var replicas []kvcheck.Replica
	for _, n := range m.nodes {
		d, err := m.dump(hctx, n)
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, kvcheck.Replica{Node: n, Dump: d})
	}
	c := kvcheck.CheckConvergence(replicas, history, attempts)
	if !c.OK() {
		t.Errorf("convergence check failed (logs in %s):\n%s", m.dir, c.Summary(20))
	} else {
		t.Logf("convergence check:\n%s", c.Summary(5))
	}
	var syncs, delivered, failures uint64
	for _, n := range m.nodes {
		if s, err := m.replicationStatus(hctx, n); err == nil {
			for _, p := range s.Peers {
				syncs, delivered, failures = syncs+p.Syncs, delivered+p.Delivered, failures+p.Failures
			}
		}
	}
	t.Logf("replication: %d writes delivered, %d failed attempts retried, %d full syncs", delivered, failures, syncs)
	return took
}

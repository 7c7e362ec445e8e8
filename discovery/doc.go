// Package discovery makes every sidecar a member of a SWIM gossip pool
// (hashicorp/memberlist) and turns membership into endpoints: which
// sidecars serve which service, published as immutable snapshots.
//
// Goroutines and who owns what:
//   - memberlist's own goroutines run the protocol and call the delegates
//     in delegate.go. Those callbacks copy what they need (memberlist holds
//     its node lock while calling them) and hand it to a buffered channel
//     without blocking.
//   - Agent.loop owns the member table: it applies events, reaps failed
//     members, coalesces bursts (a mass join publishes once, not a hundred
//     times) and publishes a Snapshot.
//   - Agent.joinLoop joins the seeds at start-up, retrying with backoff
//     until one answers; Joined reports success (readiness waits for it).
//   - Agent.reconnectLoop re-joins failed members and absent seeds, because
//     memberlist never re-merges the two sides of a healed partition on its
//     own (LIBRARIES.md §3).
//
// Left versus failed: a member that stops gracefully broadcasts a leave and
// is gone from every view at once; it no longer counts toward the cluster.
// A member that crashes is failed: it is remembered with its address,
// retried by the reconnect loop, and counted toward the cluster size until
// it is reaped after Config.ReapAfter (default 24 h, as serf). Fencing
// relies on that distinction.
package discovery

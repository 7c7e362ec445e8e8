//go:build netns && linux

// Package netns is Causeway's real-partition test tier: a control plane
// and five sidecars, each with a kv example app, in their own Linux
// network namespaces, cut apart and healed by moving veth ends between
// two bridges. It needs root and iproute2, and runs only with the build
// tag netns (run.sh builds the binaries and runs it; `go test ./...`
// never compiles it).
//
// # Topology
//
// Every node (n1..n5 and cp, the control plane) is a network namespace
// with loopback and one data interface, eth0, addressed from
// 198.18.0.0/24 (n1 = .11 … n5 = .15, cp = .2). The other end of each
// node's veth pair sits in a switch namespace holding two bridges, cwA-ID
// and cwB-ID. All data ends start on cwA. A cut moves the chosen nodes'
// ends to cwB: the two sides then reach only themselves, on separate L2
// domains, and nothing routes between them (no node has a default route
// and the switch namespace has no addresses). A heal moves them back.
// Every name starts with a random run id (cw<ID>-…), so parallel or
// leftover runs never clash.
//
// The bridges live in their own namespace rather than the host's: a host
// that loads br_netfilter (Docker does) passes bridged frames through its
// iptables FORWARD chain, whose policy Docker sets to DROP. A fresh
// namespace has no rules, and the tier never touches the host's
// interfaces or firewall.
//
// Inside each node: the kv app on 127.0.0.1:8080, a replica of every
// other node's (--peers: their sidecars' inbound addresses; --mesh: its
// own sidecar's outbound, through which it replicates), its sidecar with
// inbound, gossip and the advertised address on the node's 198.18 address,
// outbound on 127.0.0.1:15001, admin on 127.0.0.1:15000 (the product's
// defaults: loopback only). The control plane serves xDS and gossip on
// 198.18.0.2 and its API on 127.0.0.1:18080.
//
// # How the test reaches into a namespace
//
// There is no management network that a cut could miss or leak through:
// the test process opens its connections from inside a node's namespace.
// Its dialer locks a goroutine to an OS thread, switches that thread into
// the namespace with setns(2), creates and connects the socket there (a
// socket belongs to the namespace it was created in), and lets the thread
// exit instead of switching back. A client writing "on node n3" therefore
// sends PUT http://127.0.0.1:15001/kv/KEY with Host: kv from inside n3,
// exactly as an app beside that sidecar would, and the mesh routes it to
// a kv instance reachable from n3's side.
//
// # Clean-up
//
// t.Cleanup stops every process (SIGTERM, then SIGKILL, by PID) and
// deletes the namespaces (which deletes the veths and bridges in them).
// Every PID and namespace is also appended to files in CW_NETNS_STATE
// when that is set, so run.sh's trap can remove them when the test binary
// dies without running its clean-ups (a -timeout panic, a kill).
package netns

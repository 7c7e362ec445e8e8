// Package clock implements the logical clocks a Causeway sidecar carries on
// every hop: a Lamport clock and a bounded vector clock, their header
// encodings, and a per-node Clock with Send/Receive methods on http.Header.
//
// # Headers
//
//	x-mesh-lamport: 1234
//
// The sender's Lamport timestamp: a decimal integer in [1, 2^63-1], no sign,
// no leading zeros, at most 19 bytes.
//
//	x-mesh-vclock: Gh3k_a9Q=17,AbCdEfGh=4,Zz09-_xY=230,~
//
// The sender's vector clock, at most 1024 bytes and 32 entries:
//
//	vclock  = entry *( "," entry ) [ "," "~" ]
//	entry   = key "=" counter
//	key     = 8 base64url characters (A-Z a-z 0-9 - _), 48 bits
//	counter = decimal in [1, 2^63-1] without leading zeros
//
// The first entry is the sender's own (the "owner"); the rest are sorted by
// key with no key repeated. A trailing "~" means the vector was pruned
// somewhere in its history (see below). Decimal counters and base64url keys
// are header-safe tokens that survive any proxy, read well in curl output
// and in span attributes, and parse without allocation; a binary
// (base64url varint) form would save about a quarter of the bytes of an
// entry, which at the default bound is not worth losing readability.
//
// A key names one incarnation of one node: the first 48 bits of
// SHA-256(node id, 0x00, incarnation), where the incarnation is a random
// 64-bit value drawn at start-up. Spans carry the node id (mesh.node) next to
// the vector, so a reader can map keys back to nodes.
//
// # Monotonic across restarts
//
// Vector entries: every start draws a new incarnation, hence a new key, and
// its counter starts again at 1. An entry is therefore never reused, whether
// or not a data directory exists (two incarnations collide with probability
// about 2^-48 per pair).
//
// Lamport: with Config.DataDir the clock keeps a high-water mark in
// DataDir/lamport-hw. It never hands out a value above the stored mark;
// when it needs to, it first writes mark = value + ReserveBlock (2^20 by
// default) to a temporary file, fsyncs it, renames it over the old one and
// fsyncs the directory. A restarted clock starts at the stored mark, so it
// never reissues a value; it skips at most one block, and a tick costs an
// fsync only once per block (or when a received timestamp jumps past the
// mark). Without a data directory the Lamport clock restarts at 0: Lamport
// values are then monotonic per incarnation only, and (key, counter) of the
// vector entry is what identifies an event uniquely.
//
// # The bound, and what it gives up
//
// A mesh may have 1,000 sidecars; a vector keeps at most Config.MaxEntries
// entries (default 16, at most 32), own entry included. When a merge leaves
// more, the entries that advanced least recently (by the local event count;
// ties: smaller counter, then smaller key) are dropped and the vector is
// marked pruned ("~"). The mark is sticky: every vector merged from a pruned
// one is pruned too.
//
// Every counter in a vector is a lower bound of the true one, and a missing
// entry is exactly zero only in an unpruned vector. Compare uses the owner
// entry: an event a with owner entry (p, c) happened before b exactly when
// b's true entry for p is at least c. Hence:
//
//   - Before / After are reported only when b's (or a's) entry proves it, and
//     are then always right, pruned or not.
//   - Concurrent is reported only when neither vector is pruned, and is then
//     exact.
//   - Otherwise Compare answers Unknown. What is given up: once pruning has
//     happened, two events whose relation hinges on a dropped entry (a
//     happened before b through a chain whose trace in b's vector was pruned,
//     or the two really are concurrent) are reported Unknown, never ordered
//     or called concurrent wrongly. Events on the same node are always
//     ordered by their own counters.
//
// Lamport order stays a linear extension of happens-before whatever the
// bound: a→b implies L(a) < L(b).
//
// # Hostile input
//
// Parsers check the length (19 and 1024 bytes) and the entry count (32)
// before allocating, never panic, and reject anything non-canonical. A
// remote Lamport value more than 2^32 ahead of the local one is rejected
// (ErrJump), and no value ever passes 2^63-1 (ErrExhausted).
package clock

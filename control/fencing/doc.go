// Package fencing is the control plane's side of quorum-based write
// fencing (PRODUCT.md, "Fencing semantics"), and the sidecar's reporter
// that talks to it.
//
// # Domains
//
// A fencing domain is a set of sidecars that hold a quorum together. The
// mesh domain ("mesh") is every sidecar of the mesh; a FencingPolicy
// targeting the Mesh sets its mode and expected size. A FencingPolicy
// targeting a service S creates the domain "service/S" of S's replicas,
// and S's sidecars get that domain's verdict instead of the mesh's (they
// still count as members of the mesh domain). A domain's members are the
// control plane's instances of the domain (alive and failed, never those
// that left, never the control plane itself), the sidecars that reported
// and the serving members those reports list; the policy's expectedSize,
// when set, replaces their count. Mode off: verdicts say not fenced and
// enabled=false, with no lease.
//
// # Groups and the quorum side
//
// A report counts for 3 report intervals (default interval 2s). Two
// reporters of a domain are connected when each lists the other as
// reachable; the connected groups are the components of that graph. The
// group with more than half of the expected size holds the quorum; at most
// one can, unless an explicit expected size is below the real size, in
// which case none is given it. A reporter in the quorum group is writable;
// every other reporter is fenced, with a reason naming the figures. A
// sidecar that does not report gets nothing, and fences itself when its
// lease runs out; a control plane that hears only from a minority fences
// everyone it hears from.
//
// # Epochs
//
// Each domain has an epoch. A new one starts when the quorum group loses a
// member (or the quorum altogether) and when a quorum is gained while none
// was held (including the first quorum after a control-plane restart,
// since which members held it is not stored); members joining the quorum
// group get the current epoch. A new epoch is the next number above every
// epoch known (all domains' and the newest any sidecar reported), so
// epochs are unique across domains and a control plane that lost its
// data directory still moves forward. Epochs are stored in
// DATA_DIR/fencing-epochs.json (EpochFileName) with an atomic, fsynced
// replace before any verdict carries them; when that fails, reports get
// UNAVAILABLE and no verdict.
//
// # Leases
//
// Every verdict of an enabled domain carries a lease (default 6s: three report intervals). The
// trade-off: with a single control plane, writes need it reachable — a
// sidecar that cannot renew its lease fences itself — while reads never
// need it. The control plane is therefore on the write path's
// availability (not its latency: a verdict is renewed in the background),
// and a control plane outage longer than the lease makes the mesh
// read-only. Services that prefer availability over this protection
// switch fencing off with a FencingPolicy.
//
// # Concurrency
//
// Service has no goroutines: Report, Status and Metrics evaluate under one
// mutex, only when an input changed (a report's view, a report going
// stale, the policies, the membership source's instances), and at most
// every Config.EvaluateEvery (default a quarter of the report interval):
// an evaluation costs up to N² for N sidecars that all see each other, so
// it runs a few times per interval, not once per report. A verdict may
// therefore lag its own report by that much; a sidecar whose report was
// not evaluated yet is fenced until the next one. Reporter.Run is one
// goroutine per sidecar.
package fencing

package discovery

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures an Agent. Zero durations take the documented defaults.
type Config struct {
	// NodeName is this member's unique name (the sidecar's node id).
	NodeName string
	// Bind is the gossip HOST:PORT (TCP and UDP). Port 0 picks one.
	Bind string
	// Advertise is the host others reach this member on; default: the bind
	// host, or memberlist's choice of a private address when it is 0.0.0.0.
	Advertise string
	// Join lists seed HOST:PORT addresses. Empty: this member starts a new
	// pool and is joined at once.
	Join []string
	// Keys is the gossip keyring (16, 24 or 32 bytes each, AES-GCM); the
	// first is the primary, used to encrypt. Empty: no encryption.
	Keys [][]byte
	// Label isolates pools that share a network: members with a different
	// label cannot talk to this one.
	Label string
	// ReapAfter is how long a failed member is remembered, retried and
	// counted toward the cluster size. Default 24h.
	ReapAfter time.Duration
	// TombstoneAfter is how long a member that left stays listed (as left,
	// not counted). Default 1h.
	TombstoneAfter time.Duration
	// ReconnectInterval is how often a failed member or absent seed is
	// re-joined. Default 1s.
	ReconnectInterval time.Duration
	// CoalesceMin and CoalesceMax bound how long membership changes are
	// gathered before a snapshot is published: it goes out once changes
	// have been quiet for CoalesceMin, or CoalesceMax after the first.
	// Defaults 50ms and 500ms.
	CoalesceMin, CoalesceMax time.Duration
	// Transport replaces memberlist's network transport (tests inject
	// faults with it). Nil: a NetTransport on Bind.
	Transport memberlist.NodeAwareTransport
	// Logger receives memberlist's log lines and the agent's own.
	Logger *slog.Logger
	// OnChange, if set, is called with each new snapshot from the agent's
	// loop goroutine. It must not block for long.
	OnChange func(*Snapshot)
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReapAfter, 24*time.Hour)
	def(&c.TombstoneAfter, time.Hour)
	def(&c.ReconnectInterval, time.Second)
	def(&c.CoalesceMin, 50*time.Millisecond)
	def(&c.CoalesceMax, 500*time.Millisecond)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// LANProfile returns the memberlist configuration Causeway uses on a LAN
// or a single host: memberlist's LAN defaults tightened so that a crashed
// member leaves every view of a small cluster within 10 s and a partition
// is noticed quickly.
//
//	ProbeInterval 500ms (LAN 1s), ProbeTimeout 300ms (500ms): a round-robin
//	probe reaches each of N members within N × 500 ms.
//	SuspicionMult 4, SuspicionMaxTimeoutMult 3 (LAN 6): suspicion lasts
//	between 4 × max(1, log10 N) × 500 ms = 2 s and 3 × that = 6 s,
//	shortened by independent confirmations (Lifeguard).
//	GossipInterval 100ms (200ms), GossipNodes 4 (3): news reaches every
//	member in a few hundred milliseconds.
//	PushPullInterval 15s (30s), TCPTimeout 2s (10s), GossipToTheDeadTime 15s.
//	Lifeguard awareness (AwarenessMaxMultiplier 8) stretches probes of a
//	member that is itself slow, so an overloaded member does not accuse
//	healthy ones.
func LANProfile() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 300 * time.Millisecond
	c.SuspicionMult = 4
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 100 * time.Millisecond
	c.GossipNodes = 4
	c.PushPullInterval = 15 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.GossipToTheDeadTime = 15 * time.Second
	return c
}

// Agent is this sidecar's membership in the gossip pool.
type Agent struct {
	cfg     Config
	ml      *memberlist.Memberlist
	meta    atomic.Pointer[[]byte]
	metaVal atomic.Pointer[Meta]

	events  chan event
	snap    atomic.Pointer[Snapshot]
	joined  atomic.Bool
	started time.Time

	mu      sync.Mutex // guards members, for Members() from other goroutines
	members map[string]*Member
	// leaving is set once a graceful departure is announced.
	leaving atomic.Bool
	// updateMu serialises metadata changes: memberlist's UpdateNode reads
	// the local node's state outside its own lock.
	updateMu sync.Mutex
	// suspected holds the names this agent's probes suspect, so that the
	// ping delegate reports only the first answer after a suspicion.
	suspected sync.Map

	counters Counters
	keyring  *memberlist.Keyring
	stopOnce sync.Once
}

// Counters are the agent's running totals (for metrics).
type Counters struct {
	BytesSent, BytesReceived atomic.Uint64
	Joins, Failures, Leaves  atomic.Uint64
	DroppedEvents            atomic.Uint64
	// Suspicions counts peers this member suspected (a probe went
	// unanswered); many suspicions without failures mean a lossy network.
	Suspicions atomic.Uint64
}

// New creates an agent and binds its gossip listener; it does not join
// anyone until Run.
func New(cfg Config, meta Meta) (*Agent, error) {
	cfg.setDefaults()
	a := &Agent{cfg: cfg, events: make(chan event, 8192), members: map[string]*Member{}, started: time.Now()}
	if err := a.setMeta(meta); err != nil {
		return nil, err
	}
	mc := LANProfile()
	mc.Name = cfg.NodeName
	mc.Label = cfg.Label
	mc.Delegate = &delegate{a: a}
	mc.Events = &eventDelegate{a: a}
	mc.Logger = log.New(&logBridge{l: cfg.Logger, c: &a.counters, suspect: a.suspect}, "", 0)
	mc.Ping = &pingDelegate{a: a}
	host, port, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", cfg.Bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("gossip port %q: %w", port, err)
	}
	mc.BindAddr, mc.BindPort = host, p
	mc.AdvertisePort = p
	if cfg.Advertise != "" {
		mc.AdvertiseAddr = cfg.Advertise
	} else if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr = host
	}
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		a.keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	tr := cfg.Transport
	if tr == nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: p, Logger: mc.Logger})
		if err != nil {
			return nil, fmt.Errorf("gossip listener %s: %w", cfg.Bind, err)
		}
		tr = nt
		if p == 0 {
			mc.BindPort = nt.GetAutoBindPort()
			mc.AdvertisePort = mc.BindPort
		}
	}
	mc.Transport = newCountingTransport(tr, &a.counters)
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("gossip: %w", err)
	}
	a.ml = ml
	a.snap.Store(&Snapshot{})
	return a, nil
}

// Addr is the address other members reach this one on.
func (a *Agent) Addr() string { return a.ml.LocalNode().Address() }

// Joined reports whether the start-up join has succeeded (always true when
// there are no seeds).
func (a *Agent) Joined() bool { return a.joined.Load() }

// Snapshot returns the latest published view.
func (a *Agent) Snapshot() *Snapshot { return a.snap.Load() }

// Counters returns the running totals.
func (a *Agent) Counters() *Counters { return &a.counters }

// Keyring exposes the gossip keyring for rotation (nil without encryption).
func (a *Agent) Keyring() *memberlist.Keyring { return a.keyring }

func (a *Agent) setMeta(m Meta) error {
	if a.leaving.Load() { // once announced, a departure is not taken back
		m.Leaving, m.Ready = true, false
	}
	b, err := m.Encode()
	if err != nil {
		return err
	}
	a.meta.Store(&b)
	a.metaVal.Store(&m)
	return nil
}

// UpdateMeta changes what this member advertises (for example readiness)
// and gossips it.
func (a *Agent) UpdateMeta(m Meta) error {
	a.updateMu.Lock()
	defer a.updateMu.Unlock()
	if err := a.setMeta(m); err != nil {
		return err
	}
	return a.ml.UpdateNode(a.cfg.ReconnectInterval)
}

// Run joins the pool and keeps the member table until ctx ends, then
// leaves gracefully (others drop this member at once) and shuts down.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); a.loop(ctx) }()
	go func() { defer wg.Done(); a.joinLoop(ctx) }()
	go func() { defer wg.Done(); a.reconnectLoop(ctx) }()
	<-ctx.Done()
	wg.Wait()
	return a.Leave()
}

// AnnounceLeaving gossips, ahead of Leave, that this member is about to
// leave (and is not ready), so that by the time its leave message arrives
// every member knows it left rather than failed. Call it when a graceful
// shutdown begins; Leave announces again in any case.
func (a *Agent) AnnounceLeaving() {
	if a.leaving.Swap(true) {
		return
	}
	a.updateMu.Lock()
	defer a.updateMu.Unlock()
	if a.setMeta(*a.metaVal.Load()) == nil {
		_ = a.ml.UpdateNode(500 * time.Millisecond)
	}
}

// Leave departs gracefully and shuts memberlist down. Idempotent; after
// Crash it does nothing.
//
// memberlist's leave event does not say whether a member left or was
// declared dead (v0.7.0 reports the embedded Node, whose State field is
// never set; the real state is in its private nodeState). So the member
// first gossips metadata marked Leaving (which also takes it out of
// routing at once), then broadcasts its leave; others record a departure
// of a member marked Leaving as left, any other as failed.
func (a *Agent) Leave() error {
	var err error
	a.stopOnce.Do(func() {
		a.leaving.Store(true)
		a.updateMu.Lock()
		if a.setMeta(*a.metaVal.Load()) == nil {
			_ = a.ml.UpdateNode(500 * time.Millisecond)
		}
		a.updateMu.Unlock()
		err = a.ml.Leave(time.Second)
		if serr := a.ml.Shutdown(); err == nil {
			err = serr
		}
	})
	return err
}

// Crash stops gossiping without a leave, as a crashed process would
// (tests only).
func (a *Agent) Crash() { a.stopOnce.Do(func() { _ = a.ml.Shutdown() }) }

func (a *Agent) joinLoop(ctx context.Context) {
	if len(a.cfg.Join) == 0 {
		a.joined.Store(true)
		return
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := a.ml.Join(a.cfg.Join)
		if n > 0 {
			a.joined.Store(true)
			a.cfg.Logger.Info("joined the gossip pool", "contacted", n, "seeds", a.cfg.Join, "attempt", attempt)
			a.settleSync(ctx)
			return
		}
		a.cfg.Logger.Warn("gossip join failed; retrying", "seeds", a.cfg.Join, "attempt", attempt, "error", err)
		// Full jitter: a fleet restarting together does not retry in step.
		wait := time.Duration(rand.Int64N(int64(backoff))) + 10*time.Millisecond //nolint:gosec // jitter
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// settleSync exchanges full state with the seeds once more, a few seconds
// after joining. Members that start together (a fleet, a compose file)
// join while the pool is still forming, and an update gossiped in that
// window (another member turning ready) can miss a member that was not
// yet known to its sender; without this it would wait for the periodic
// push/pull (15 s or more).
func (a *Agent) settleSync(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(settleAfter):
	}
	if n, err := a.ml.Join(a.cfg.Join); n == 0 {
		a.cfg.Logger.Debug("settle sync with the seeds failed", "error", err)
	}
}

// settleAfter is how long after joining settleSync runs.
const settleAfter = 3 * time.Second

// reconnectLoop re-joins one random failed member, and every seed that is
// not a live member, every ReconnectInterval. After a partition heals, the
// first successful join merges both sides (push/pull refutes the deaths).
func (a *Agent) reconnectLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.joined.Load() {
			continue
		}
		targets := a.reconnectTargets()
		if len(targets) == 0 {
			continue
		}
		if n, err := a.ml.Join(targets); n > 0 {
			a.cfg.Logger.Debug("reconnected", "targets", targets, "contacted", n)
		} else {
			a.cfg.Logger.Debug("reconnect attempt failed", "targets", targets, "error", err)
		}
	}
}

func (a *Agent) reconnectTargets() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var failed []string
	live := map[string]bool{}
	for _, m := range a.members {
		switch m.State {
		case StateFailed:
			failed = append(failed, m.Name+"/"+m.GossipAddr)
		case StateAlive:
			live[m.GossipAddr] = true
		}
	}
	var targets []string
	if len(failed) > 0 {
		targets = append(targets, failed[rand.IntN(len(failed))]) //nolint:gosec // spreading retries
	}
	for _, s := range a.cfg.Join {
		if !live[s] && s != a.Addr() {
			targets = append(targets, s)
		}
	}
	slices.Sort(targets)
	return slices.Compact(targets)
}

// logBridge turns memberlist's "[LEVEL] memberlist: msg" lines into slog.
// It also counts suspicions, which memberlist reports only in its log.
type logBridge struct {
	l       *slog.Logger
	c       *Counters
	suspect func(node string) // this member's own probe of node failed
}

func (b *logBridge) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[INFO]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "] "); i >= 0 {
		line = line[i+2:]
	}
	if rest, ok := strings.CutPrefix(line, "memberlist: Suspect "); ok {
		b.c.Suspicions.Add(1)
		if node, ok := strings.CutSuffix(rest, " has failed, no acks received"); ok && b.suspect != nil {
			b.suspect(node)
		}
	}
	b.l.Log(context.Background(), level, line, "component", "gossip")
	return len(p), nil
}

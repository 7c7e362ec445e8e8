// Package replication sends the client writes a kv replica accepts to its
// peers through the mesh, and retries each until the peer acknowledges it.
//
// # Transport
//
// Each write goes to each peer as one request to this replica's own
// sidecar (its outbound address, Config.Mesh):
//
//	PUT http://MESH/replicate?key=KEY
//	Host: kv                       the service (Config.Service)
//	X-Mesh-Endpoint: PEER          the peer's mesh endpoint: its sidecar's inbound HOST:PORT
//	X-Kv-Origin, X-Kv-Origin-Seq, X-Kv-Epoch, X-Kv-Version   the write's identity and rank
//
// with the value as the body (package kvstore, ReplicatePath). The mesh
// treats it as any write: the sidecar refuses it while this side is
// fenced, the peer's sidecar while that side is fenced or when it was
// admitted under an epoch older than the newest it knows, and the pinned
// endpoint answers no_healthy_upstream while the peer is not a live
// member. All of that, timeouts and every other answer but 200 are
// retried; only 400 and 413 from the peer's app itself (the write can
// never be applied there) drop the write, counted as rejected.
//
// # Queues, bound and full sync
//
// Every peer has its own FIFO queue and one goroutine that sends its
// head, retrying with capped exponential backoff and jitter (attempt n
// waits a random time between half and all of min(MaxBackoff,
// MinBackoff·2^n)) until the peer acknowledges it, then moves on. A queue
// holds at most QueueLimit writes (default DefaultQueueLimit). A write
// that finds it full is not dropped silently and client writes are never
// held back: the queue is emptied and the peer marked as needing a full
// sync. The sender then takes a snapshot of every key's current write
// (kvstore.Store.Snapshot) and sends those, each with its original
// identity, before whatever was queued since; while the mark is set new
// writes need no queueing, the snapshot taken later covers them. The
// snapshot carries, for every key, a write that ranks at least as high as
// every write it replaces, so the peer converges to the same values; its
// history then lacks the intermediate writes (kvcheck's convergence check
// compares values, not histories). GET /replication shows each peer's
// queue, its syncs and its last error.
//
// # Goroutines and shutdown
//
// One sender goroutine per peer, started by New. Close cancels them,
// including a request in flight, and waits until they have returned;
// writes still queued are reported by Status and lost with the process,
// as is everything else of this in-memory store.
package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

// Defaults of Config.
const (
	// DefaultService is the mesh service name of the kv replicas.
	DefaultService = "kv"
	// DefaultQueueLimit bounds each peer's queue: past it the peer gets a
	// full sync instead.
	DefaultQueueLimit = 1024
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between two
	// attempts at one write.
	DefaultMinBackoff = 50 * time.Millisecond
	DefaultMaxBackoff = time.Second
	// DefaultRequestTimeout bounds one attempt.
	DefaultRequestTimeout = 5 * time.Second
)

// EndpointHeader pins a request to one endpoint of the target service
// (README.md, Ports, admin API and headers).
const EndpointHeader = "X-Mesh-Endpoint"

// Config says where the peers are and how to reach them.
type Config struct {
	// Peers are the peers' mesh endpoints: their sidecars' inbound
	// HOST:PORT as this replica's sidecar lists them in /clusters.
	Peers []string
	// Mesh is this replica's sidecar outbound HOST:PORT.
	Mesh string
	// Service is the mesh service the replicas front (default
	// DefaultService).
	Service string
	// QueueLimit is the most writes queued per peer (default
	// DefaultQueueLimit).
	QueueLimit int
	// MinBackoff and MaxBackoff bound the retry backoff (defaults
	// DefaultMinBackoff and DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds one attempt (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Client sends the requests (default: a client of its own, keeping a
	// connection per peer to the sidecar).
	Client *http.Client
	// Logger receives failures and recoveries (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if len(c.Peers) == 0 {
		return errors.New("no peers")
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("peer %q: want HOST:PORT: %w", p, err)
		}
		if seen[p] {
			return fmt.Errorf("peer %q listed twice", p)
		}
		seen[p] = true
	}
	if _, _, err := net.SplitHostPort(c.Mesh); err != nil {
		return fmt.Errorf("mesh address %q: want HOST:PORT: %w", c.Mesh, err)
	}
	if c.Service == "" {
		c.Service = DefaultService
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = DefaultQueueLimit
	}
	if c.QueueLimit < 1 {
		return fmt.Errorf("queue limit %d: want at least 1", c.QueueLimit)
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			Proxy:               nil, // the sidecar is the proxy; never an HTTP_PROXY
			MaxIdleConnsPerHost: len(c.Peers),
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Replicator sends a store's accepted writes to its peers. Create it with
// New; stop it with Close.
type Replicator struct {
	cfg    Config
	store  *kvstore.Store
	peers  []*peer
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New validates cfg, starts one sender per peer and registers with store
// so that every write it accepts from now on is queued for every peer.
func New(store *kvstore.Store, cfg Config) (*Replicator, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("replication: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Replicator{cfg: cfg, store: store, cancel: cancel}
	for _, addr := range cfg.Peers {
		r.peers = append(r.peers, &peer{addr: addr, limit: cfg.QueueLimit, wake: make(chan struct{}, 1), log: cfg.Logger})
	}
	store.OnAccept(r.enqueue)
	for _, p := range r.peers {
		r.wg.Go(func() { r.run(ctx, p) })
	}
	return r, nil
}

// Close stops the senders (cancelling requests in flight) and waits until
// they have returned. Writes accepted afterwards are queued but never
// sent.
func (r *Replicator) Close() {
	r.cancel()
	r.wg.Wait()
}

// enqueue is the store's OnAccept function: it runs under the store's
// lock and only appends (the sender logs an overflow when it acts on it).
func (r *Replicator) enqueue(w kvstore.Write) {
	for _, p := range r.peers {
		p.enqueue(w)
	}
}

// run sends p's writes one at a time until ctx ends.
func (r *Replicator) run(ctx context.Context, p *peer) {
	for {
		w, ok := p.next(ctx, r.store)
		if !ok {
			return
		}
		for attempt := 0; ; attempt++ {
			res, err := r.send(ctx, p.addr, w)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				if p.delivered(res.Duplicate) {
					r.cfg.Logger.Info("replicating to the peer again", "peer", p.addr)
				}
				break
			}
			var de *deliveryError
			if errors.As(err, &de) && de.permanent() {
				p.rejected(err)
				r.cfg.Logger.Error("peer rejected a write; dropped", "peer", p.addr,
					"origin", w.Origin, "originSeq", w.OriginSeq, "key", w.Key, "err", err)
				break
			}
			if p.failed(err) {
				r.cfg.Logger.Warn("cannot replicate to the peer; retrying", "peer", p.addr, "err", err)
			}
			if !sleep(ctx, backoff(attempt, r.cfg.MinBackoff, r.cfg.MaxBackoff)) {
				return
			}
		}
	}
}

// send delivers w to peer through the mesh once.
func (r *Replicator) send(ctx context.Context, peer string, w kvstore.Write) (kvstore.ApplyResult, error) {
	var res kvstore.ApplyResult
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	u := "http://" + r.cfg.Mesh + kvstore.ReplicatePath + "?key=" + url.QueryEscape(w.Key)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, strings.NewReader(w.Value))
	if err != nil {
		return res, fmt.Errorf("building the request: %w", err)
	}
	req.Host = r.cfg.Service
	req.Header.Set(EndpointHeader, peer)
	req.Header.Set(kvstore.OriginHeader, w.Origin)
	req.Header.Set(kvstore.OriginSeqHeader, strconv.FormatUint(w.OriginSeq, 10))
	req.Header.Set(kvstore.WriteEpochHeader, strconv.FormatUint(w.Epoch, 10))
	req.Header.Set(kvstore.VersionHeader, strconv.FormatUint(w.Version, 10))
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return res, fmt.Errorf("PUT %s via %s: %w", kvstore.ReplicatePath, r.cfg.Mesh, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return res, fmt.Errorf("PUT %s via %s: reading the answer: %w", kvstore.ReplicatePath, r.cfg.Mesh, err)
	}
	fromApp := resp.Header.Get(kvstore.NodeHeader) != ""
	if resp.StatusCode != http.StatusOK || !fromApp {
		return res, &deliveryError{status: resp.StatusCode, meshError: resp.Header.Get("X-Mesh-Error"),
			fromApp: fromApp, body: strings.TrimSpace(string(body))}
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return res, fmt.Errorf("PUT %s: decoding the answer: %w", kvstore.ReplicatePath, err)
	}
	return res, nil
}

// deliveryError is an answer other than the peer app's 200.
type deliveryError struct {
	status    int
	meshError string // the mesh's x-mesh-error, if it answered itself
	fromApp   bool   // the peer's kv app answered (x-kv-node)
	body      string
}

func (e *deliveryError) Error() string {
	who := "the mesh"
	if e.fromApp {
		who = "the peer"
	}
	msg := fmt.Sprintf("%s answered %d", who, e.status)
	if e.meshError != "" {
		msg += " x-mesh-error " + e.meshError
	}
	if e.body != "" {
		const most = 200
		b := e.body
		if len(b) > most {
			b = b[:most] + "…"
		}
		msg += ": " + b
	}
	return msg
}

// permanent reports whether the peer's app refused the write as one it
// can never apply.
func (e *deliveryError) permanent() bool {
	return e.fromApp && e.meshError == "" &&
		(e.status == http.StatusBadRequest || e.status == http.StatusRequestEntityTooLarge)
}

// backoff is the wait before attempt+1: a random time between half and
// all of min(most, least·2^attempt).
func backoff(attempt int, least, most time.Duration) time.Duration {
	d := least
	for i := 0; i < attempt && d < most; i++ {
		d *= 2
	}
	d = min(d, most)
	half := d / 2
	return half + rand.N(d-half+1) //nolint:gosec // jitter needs no unpredictability
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

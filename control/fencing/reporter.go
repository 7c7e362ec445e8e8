package fencing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/causeway-mesh/causeway/control/fencingpb"
)

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	// Conn is the connection to the control plane (usually the xDS
	// client's). When nil, Addr is dialled with DialOptions and the
	// connection is closed when Run returns.
	Conn grpc.ClientConnInterface
	// Addr is the control plane's xDS HOST:PORT; used only without Conn.
	Addr string
	// DialOptions for Addr; default plaintext
	// (insecure.NewCredentials()), like the xDS client's default.
	DialOptions []grpc.DialOption
	// Interval between reports; default DefaultReportInterval (2s). It
	// must match the control plane's report interval, which decides how
	// long a report counts (3 intervals).
	Interval time.Duration
	// Timeout bounds one Report call; default Interval.
	Timeout time.Duration
	// BackoffBase and BackoffMax bound the wait after a failed report:
	// the n-th consecutive failure waits a uniformly random time in
	// [0, min(BackoffMax, BackoffBase·2ⁿ)). Defaults 100ms and Interval.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// View returns the sidecar's current view. Required; called from
	// Run's goroutine before every report. Returning nil skips a round.
	View func() *fencingpb.ViewReport
	// OnVerdict receives every verdict. Required; called from Run's
	// goroutine, must not block for long.
	OnVerdict func(*fencingpb.Verdict)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Reporter sends a sidecar's view to the control plane every interval and
// hands each verdict to OnVerdict. It never makes up a verdict: when the
// control plane cannot be reached the sidecar's lease simply runs out.
type Reporter struct {
	cfg ReporterConfig
	cc  *grpc.ClientConn // dialled by NewReporter, closed by Run
}

// NewReporter checks cfg. With Addr it creates the client connection
// (grpc.NewClient does not connect until the first call).
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if cfg.View == nil || cfg.OnVerdict == nil {
		return nil, errors.New("fencing: reporter config: View and OnVerdict must be set")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultReportInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = cfg.Interval
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 100 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = cfg.Interval
	}
	cfg.BackoffMax = max(cfg.BackoffMax, cfg.BackoffBase)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reporter{cfg: cfg}
	if cfg.Conn == nil {
		if cfg.Addr == "" {
			return nil, errors.New("fencing: reporter config: Conn or Addr must be set")
		}
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, cfg.DialOptions...)
		cc, err := grpc.NewClient(cfg.Addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("fencing: reporter: %w", err)
		}
		r.cc, r.cfg.Conn = cc, cc
	}
	return r, nil
}

// Run reports until ctx is cancelled, then returns nil (after closing a
// connection it dialled). Run may be called once.
func (r *Reporter) Run(ctx context.Context) error {
	if r.cc != nil {
		defer func() { _ = r.cc.Close() }()
	}
	client := fencingpb.NewFencingClient(r.cfg.Conn)
	failures := 0
	for {
		wait := r.cfg.Interval
		if err := r.once(ctx, client); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failures == 0 {
				r.cfg.Logger.Warn("fencing: report to the control plane failed; retrying", "error", err)
			}
			wait = r.backoff(failures)
			failures++
		} else {
			if failures > 0 {
				r.cfg.Logger.Info("fencing: reporting to the control plane again", "failedAttempts", failures)
			}
			failures = 0
		}
		if !sleepCtx(ctx, wait) {
			return nil
		}
	}
}

func (r *Reporter) once(ctx context.Context, client fencingpb.FencingClient) error {
	view := r.cfg.View()
	if view == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	v, err := client.Report(ctx, view)
	if err != nil {
		return err
	}
	r.cfg.OnVerdict(v)
	return nil
}

// backoff is the jittered wait after the n-th consecutive failure (n ≥ 0).
func (r *Reporter) backoff(n int) time.Duration {
	c := r.cfg.BackoffBase
	for i := 0; i < n && c < r.cfg.BackoffMax; i++ {
		c *= 2
	}
	c = min(c, r.cfg.BackoffMax)
	return time.Duration(rand.Int64N(int64(c)) + 1) // #nosec G404 -- jitter, not a secret
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

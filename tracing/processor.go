package tracing

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BatchProcessor is a span processor with a bounded queue that never blocks
// the request path: a span ended while the queue is full is dropped and
// counted. (sdktrace's BatchSpanProcessor also drops by default, but keeps
// its count unexported; this one exposes it for Prometheus.) One goroutine
// exports batches of up to MaxExportBatchSize spans, at the latest
// ScheduleDelay after the previous export.
type BatchProcessor struct {
	exp sdktrace.SpanExporter
	cfg BatchConfig

	queue   chan sdktrace.ReadOnlySpan
	flushes chan chan error
	stop    chan struct{}
	done    chan struct{}

	stopped  atomic.Bool
	stopOnce sync.Once

	dropped, exported, failed atomic.Uint64
}

// ProcessorStats are cumulative span counts.
type ProcessorStats struct {
	// Dropped spans found the queue full (or the processor shut down).
	Dropped uint64
	// Exported spans were accepted by the exporter.
	Exported uint64
	// Failed spans were in a batch the exporter returned an error for.
	Failed uint64
}

// NewBatchProcessor starts a processor exporting to exp. Zero fields of cfg
// take the defaults.
func NewBatchProcessor(exp sdktrace.SpanExporter, cfg BatchConfig) *BatchProcessor {
	cfg.applyDefaults()
	p := &BatchProcessor{
		exp:     exp,
		cfg:     cfg,
		queue:   make(chan sdktrace.ReadOnlySpan, cfg.MaxQueueSize),
		flushes: make(chan chan error),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go p.run()
	return p
}

// Stats returns the cumulative counts.
func (p *BatchProcessor) Stats() ProcessorStats {
	return ProcessorStats{Dropped: p.dropped.Load(), Exported: p.exported.Load(), Failed: p.failed.Load()}
}

// OnStart implements sdktrace.SpanProcessor; it does nothing.
func (p *BatchProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span without blocking.
func (p *BatchProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	if p.stopped.Load() {
		p.dropped.Add(1)
		return
	}
	select {
	case p.queue <- s:
	default:
		p.dropped.Add(1)
	}
}

// ForceFlush exports everything queued so far and waits for the export or
// ctx.
func (p *BatchProcessor) ForceFlush(ctx context.Context) error {
	if p.stopped.Load() {
		return nil
	}
	ch := make(chan error, 1)
	select {
	case p.flushes <- ch:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued, stops the goroutine and shuts the
// exporter down. Later calls return nil.
func (p *BatchProcessor) Shutdown(ctx context.Context) error {
	var err error
	p.stopOnce.Do(func() {
		p.stopped.Store(true)
		close(p.stop)
		select {
		case <-p.done:
		case <-ctx.Done():
			err = ctx.Err()
			return
		}
		err = p.exp.Shutdown(ctx)
	})
	return err
}

func (p *BatchProcessor) run() {
	defer close(p.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, p.cfg.MaxExportBatchSize)
	timer := time.NewTimer(p.cfg.ScheduleDelay)
	defer timer.Stop()
	export := func() error {
		if len(batch) == 0 {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ExportTimeout)
		err := p.exp.ExportSpans(ctx, batch)
		cancel()
		if err != nil {
			p.failed.Add(uint64(len(batch)))
		} else {
			p.exported.Add(uint64(len(batch)))
		}
		clear(batch)
		batch = batch[:0]
		return err
	}
	// drain exports everything currently queued.
	drain := func() error {
		var errs []error
		for {
			select {
			case s := <-p.queue:
				batch = append(batch, s)
				if len(batch) == p.cfg.MaxExportBatchSize {
					errs = append(errs, export())
				}
			default:
				errs = append(errs, export())
				return errors.Join(errs...)
			}
		}
	}
	for {
		select {
		case s := <-p.queue:
			batch = append(batch, s)
			if len(batch) == p.cfg.MaxExportBatchSize {
				_ = export()
			}
		case <-timer.C:
			_ = export()
			timer.Reset(p.cfg.ScheduleDelay)
		case ch := <-p.flushes:
			ch <- drain()
		case <-p.stop:
			_ = drain()
			return
		}
	}
}

package receiver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Forwarder relays export requests to an OTLP/HTTP collector from one
// goroutine. Enqueue never blocks: with the queue full the request is
// dropped and counted. A failed export is counted and not retried.
type Forwarder struct {
	url    string
	client *http.Client
	queue  chan *coltracepb.ExportTraceServiceRequest
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	dropped, failed atomic.Uint64
}

// NewForwarder starts forwarding to endpoint, an http(s) URL of an OTLP
// traces endpoint. queue <= 0 means 256; a nil client means one with a 10 s
// timeout.
func NewForwarder(endpoint string, queue int, client *http.Client) (*Forwarder, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("receiver: forward URL %q is not an http:// or https:// URL", endpoint)
	}
	if queue <= 0 {
		queue = 256
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	f := &Forwarder{url: endpoint, client: client, queue: make(chan *coltracepb.ExportTraceServiceRequest, queue),
		stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	return f, nil
}

// Enqueue schedules req for forwarding.
func (f *Forwarder) Enqueue(req *coltracepb.ExportTraceServiceRequest) {
	select {
	case <-f.stop:
		f.dropped.Add(1)
		return
	default:
	}
	select {
	case f.queue <- req:
	default:
		f.dropped.Add(1)
	}
}

// Stats returns the requests dropped (queue full) and failed.
func (f *Forwarder) Stats() (dropped, failed uint64) { return f.dropped.Load(), f.failed.Load() }

// Close stops the goroutine after the request in flight; queued requests are
// dropped.
func (f *Forwarder) Close() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

func (f *Forwarder) run() {
	defer close(f.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-f.stop
		cancel()
	}()
	for {
		select {
		case <-f.stop:
			return
		case req := <-f.queue:
			if err := f.send(ctx, req); err != nil {
				f.failed.Add(1)
			}
		}
	}
}

func (f *Forwarder) send(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := f.client.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("forward: %s answered %s", f.url, resp.Status)
	}
	return nil
}

package resilience

import (
	"errors"
	"io"
	"sync"
)

// ErrBodyDetached is returned by reads on the body view of an attempt
// that a later attempt replaced, or that was closed.
var ErrBodyDetached = errors.New("request body view detached: a later attempt replaced it")

// ReplayBody lets a request body be sent by several attempts. Each attempt
// reads its own view ([ReplayBody.NewAttempt]). Reads pass through to the
// original body as they happen, so streaming is not delayed, and the
// first limit bytes are kept; a new view replays the kept bytes and then
// continues with the rest of the original. Once a read beyond the limit
// has started the body can no longer be replayed.
//
// Starting a new attempt detaches the previous view: a transport
// goroutine still reading or closing it (x/net/http2 writes bodies on its
// own goroutine) gets [ErrBodyDetached] and cannot consume bytes meant for
// the next attempt; bytes it had already pulled from the original within
// the limit are kept for the next view. Closing a view never closes the
// original: the owner calls [ReplayBody.Close] when the request is done.
// Safe for concurrent use.
type ReplayBody struct {
	src   io.ReadCloser
	limit int

	mu         sync.Mutex
	cond       sync.Cond // broadcast when a source read ends or the current view changes
	buf        []byte    // kept prefix of the original, at most limit bytes
	reading    bool      // a read of src is in flight
	throughNow bool      // a read beyond the limit is in flight
	lost       bool      // bytes beyond the limit were read and not kept
	srcErr     error     // sticky error (io.EOF included) from src
	cur        *replayView
	started    bool
	closed     bool
}

// NewReplayBody wraps src, keeping up to limit bytes for replay.
func NewReplayBody(src io.ReadCloser, limit int) *ReplayBody {
	b := &ReplayBody{src: src, limit: max(limit, 0)}
	b.cond.L = &b.mu
	return b
}

// NewAttempt returns the body for the next attempt and detaches the
// previous one. The first call always succeeds (unless the body was
// closed); a later one returns false when the body cannot be replayed
// because more than the limit was read or a read beyond it is in flight.
func (b *ReplayBody) NewAttempt() (io.ReadCloser, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || (b.started && !b.replayable()) {
		return nil, false
	}
	b.started = true
	v := &replayView{b: b}
	b.cur = v
	b.cond.Broadcast()
	return v, true
}

// Replayable reports whether another attempt could replay the body now.
func (b *ReplayBody) Replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.closed && b.replayable()
}

// replayable: nothing beyond the limit was read or is being read. b.mu
// must be held.
func (b *ReplayBody) replayable() bool { return !b.lost && !b.throughNow }

// Close detaches every view and closes the original body. Call it once
// the request is finished (after the last attempt's response, or when
// giving up). It does not wait for a read in flight on another goroutine;
// that read ends with the original's close error.
func (b *ReplayBody) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.cur = nil
	b.cond.Broadcast()
	b.mu.Unlock()
	return b.src.Close()
}

type replayView struct {
	b      *ReplayBody
	pos    int
	closed bool
}

// live reports whether v may still read. b.mu must be held.
func (v *replayView) live() bool { return !v.closed && v.b.cur == v }

func (v *replayView) Read(p []byte) (int, error) {
	b := v.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		switch {
		case !v.live():
			return 0, ErrBodyDetached
		case v.pos < len(b.buf):
			n := copy(p, b.buf[v.pos:])
			v.pos += n
			return n, nil
		case b.reading:
			b.cond.Wait() // another view's read of src is in flight
			continue
		case b.srcErr != nil:
			return 0, b.srcErr
		case len(p) == 0:
			return 0, nil
		}
		return v.readSource(p)
	}
}

// readSource reads the original into p, keeping what fits under the
// limit. b.mu is held on entry and exit, released during the read.
func (v *replayView) readSource(p []byte) (int, error) {
	b := v.b
	room := b.limit - len(b.buf)
	through := room <= 0
	if !through && len(p) > room {
		p = p[:room]
	}
	b.throughNow = through // set before reading: such bytes will not be kept
	b.reading = true
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	b.reading = false
	b.throughNow = false
	if through && n > 0 {
		b.lost = true
	}
	if !through {
		b.buf = append(b.buf, p[:n]...)
	}
	if err != nil {
		b.srcErr = err
	}
	b.cond.Broadcast()
	if !v.live() {
		// Replaced while reading: the kept bytes go to the next view;
		// bytes read through cannot, and no new view could have been
		// created while such a read was in flight.
		return 0, ErrBodyDetached
	}
	if !through {
		v.pos += n
	}
	return n, err
}

// Close detaches the view. It does not close the original body.
func (v *replayView) Close() error {
	v.b.mu.Lock()
	v.closed = true
	v.b.cond.Broadcast()
	v.b.mu.Unlock()
	return nil
}

package clock

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
)

// MaxCounter is the largest value a Lamport timestamp or a vector-clock
// counter may take (2^63-1). Values never wrap: a clock that would pass it
// fails with ErrExhausted instead.
const MaxCounter = 1<<63 - 1

// MaxJump is how far a remote Lamport timestamp may lead the local one
// (2^32). A larger lead is rejected with ErrJump instead of being adopted, so
// that one forged header cannot push the whole mesh towards MaxCounter.
const MaxJump = 1 << 32

// maxLamportLen is the longest well-formed x-mesh-lamport value: the 19
// digits of MaxCounter.
const maxLamportLen = 19

var (
	// ErrMalformed marks a clock header that does not follow the encoding.
	ErrMalformed = errors.New("malformed clock header")
	// ErrJump marks a remote Lamport timestamp more than MaxJump ahead of the
	// local clock.
	ErrJump = errors.New("lamport timestamp jumps too far ahead")
	// ErrExhausted is returned when a clock would pass MaxCounter.
	ErrExhausted = errors.New("logical clock exhausted")
)

// ParseLamport parses an x-mesh-lamport value: a decimal integer in
// [1, MaxCounter] without sign, leading zeros or surrounding space. It never
// allocates on success and rejects anything longer than 19 bytes before
// looking at it.
func ParseLamport(s string) (uint64, error) {
	if len(s) == 0 || len(s) > maxLamportLen {
		return 0, fmt.Errorf("%w: lamport: length %d not in [1,%d]", ErrMalformed, len(s), maxLamportLen)
	}
	v, ok := parseCounter(s)
	if !ok {
		return 0, fmt.Errorf("%w: lamport: %q is not a decimal in [1,2^63-1] without leading zeros", ErrMalformed, clip(s))
	}
	return v, nil
}

// FormatLamport encodes v as an x-mesh-lamport value.
func FormatLamport(v uint64) string { return strconv.FormatUint(v, 10) }

// parseCounter parses a canonical decimal in [1, MaxCounter].
func parseCounter(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > maxLamportLen || s[0] == '0' {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		// 19 digits fit in uint64 without overflow; MaxCounter is checked below.
		v = v*10 + uint64(c-'0')
	}
	if v > MaxCounter {
		return 0, false
	}
	return v, true
}

// clip shortens hostile input for error messages.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// Reserver durably records a high-water mark: after Reserve(hw) returns nil,
// a restarted clock starts above hw. Reserve is called with increasing
// values, never concurrently.
type Reserver interface {
	Reserve(hw uint64) error
}

// Lamport is a Lamport clock safe for concurrent use. The zero value is a
// clock at 0 that persists nothing.
//
// With a Reserver (NewLamport), values are handed out only below a
// high-water mark that has been made durable: when a tick would pass it, the
// clock reserves the next block (value + block) first, so a tick costs an
// fsync only once per block. A restarted clock starts from the stored mark
// and so never reissues a value, at the price of skipping at most one block.
type Lamport struct {
	now      atomic.Uint64
	reserved atomic.Uint64 // 0 means unlimited (no Reserver)

	mu    sync.Mutex // serialises reservations
	res   Reserver
	block uint64
}

// NewLamport returns a clock that starts at start and, when res is not nil,
// reserves blocks of block values through it before handing them out. The
// first block is reserved before NewLamport returns, so a storage problem is
// reported at start-up rather than on the first request.
func NewLamport(start uint64, res Reserver, block uint64) (*Lamport, error) {
	if start > MaxCounter {
		return nil, fmt.Errorf("lamport start %d: %w", start, ErrExhausted)
	}
	l := &Lamport{res: res, block: block}
	l.now.Store(start)
	if res == nil {
		return l, nil
	}
	if block == 0 {
		return nil, errors.New("lamport: reservation block must be positive")
	}
	if err := l.reserve(start + 1); err != nil {
		return nil, err
	}
	return l, nil
}

// Now returns the last value handed out (0 before the first tick).
func (l *Lamport) Now() uint64 { return l.now.Load() }

// Reserved returns the durable high-water mark, or 0 when the clock persists
// nothing.
func (l *Lamport) Reserved() uint64 { return l.reserved.Load() }

// Tick advances the clock for a local or send event and returns the new
// value.
func (l *Lamport) Tick() (uint64, error) { return l.advance(0) }

// Witness merges a remote timestamp (a receive event): the clock becomes
// max(local, remote)+1 and that value is returned. A remote value more than
// MaxJump ahead fails with ErrJump and leaves the clock untouched; the caller
// may still Tick.
func (l *Lamport) Witness(remote uint64) (uint64, error) {
	if remote > MaxCounter {
		return 0, fmt.Errorf("lamport %d: %w", remote, ErrExhausted)
	}
	if cur := l.now.Load(); remote > cur && remote-cur > MaxJump {
		return 0, fmt.Errorf("remote lamport %d, local %d: %w", remote, cur, ErrJump)
	}
	return l.advance(remote)
}

func (l *Lamport) advance(remote uint64) (uint64, error) {
	for {
		cur := l.now.Load()
		next := max(cur, remote)
		if next >= MaxCounter {
			return 0, ErrExhausted
		}
		next++
		if l.res != nil && next > l.reserved.Load() {
			if err := l.reserve(next); err != nil {
				return 0, err
			}
		}
		if l.now.CompareAndSwap(cur, next) {
			return next, nil
		}
	}
}

// reserve makes sure that v is below the durable high-water mark.
func (l *Lamport) reserve(v uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v <= l.reserved.Load() {
		return nil
	}
	hw := uint64(MaxCounter)
	if v < MaxCounter-l.block {
		hw = v + l.block
	}
	if err := l.res.Reserve(hw); err != nil {
		return fmt.Errorf("lamport: reserve high-water mark %d: %w", hw, err)
	}
	l.reserved.Store(hw)
	return nil
}
